#!/usr/bin/env bash
# Says whether the real node's tier of `make test` can run without its long cold builds:
# exit 0 when this machine runs as root, has Debian's container tools, and the node's
# binaries (kubelet, kube-proxy, CoreDNS) and base images were built once into the cache
# (8 to 55 min from nothing, measured; the project's own images rebuild from them in minutes).
# Otherwise exit 1 with the reason on stdout. `make test` runs the tier only when this
# says yes; `make test-real-node` builds whatever is missing and always runs it.
set -euo pipefail

cache="${MSTC_CACHE_DIR:-$HOME/.cache/mstc-stack}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "$here/versions.env"
coredns_v=$(sed -n 's/^COREDNS_VERSION = "\(.*\)"$/\1/p' "$here/realnode_services.py")

no() { echo "real-node tier not run: $*"; exit 1; }

[[ "$(id -u)" == 0 ]] || no "it needs root (a kubelet, containerd and network namespaces)"
for tool in containerd runc ctr umoci debootstrap buildah socat nft /usr/lib/cni/bridge; do
  command -v "$tool" >/dev/null || no "$tool is missing (make realnode-deps installs it)"
done
for binary in "kubernetes-$KUBERNETES_VERSION/kubelet" "kubernetes-$KUBERNETES_VERSION/kube-proxy" \
              "coredns-$coredns_v/coredns"; do
  [[ -x "$cache/$binary" ]] || no "$cache/$binary is not built yet (make realnode-build)"
done
for image in pause base python rabbitmq minio; do
  compgen -G "$cache/images/$image-*.tar" >/dev/null \
    || no "the $image image is not built yet (make realnode-build)"
done
echo "real-node tier: cache warm"
