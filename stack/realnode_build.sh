#!/usr/bin/env bash
# Builds the real node's Kubernetes binaries (kubelet, kube-proxy) from k8s.io/kubernetes at
# the stack's pinned version, into the same cache directory as the control plane
# ($MSTC_CACHE_DIR/kubernetes-<version>/), the same way stack/build.sh builds it: inside a
# throwaway Go module whose staging modules point at their published versions. Its own work
# directory, so it never shares one with build.sh. build.sh calls it when
# MSTC_STACK_REAL_NODE=1; it can also be run on its own.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${MSTC_CACHE_DIR:-$HOME/.cache/mstc-stack}"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0

log() { printf '[realnode-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# CoreDNS, the node's cluster DNS, from its own Go module (no replace directives, so
# `go install module@version` builds it), cached by version beside the rest. Its version is
# realnode_services.py's COREDNS_VERSION.
coredns_v=$(sed -n 's/^COREDNS_VERSION = "\(.*\)"$/\1/p' "$here/realnode_services.py")
coredns_out="$cache/coredns-$coredns_v"
if [[ ! -x "$coredns_out/coredns" ]]; then
  start=$SECONDS
  log "coredns $coredns_v: building"
  rm -rf "$coredns_out.tmp" && mkdir -p "$coredns_out.tmp"
  GOBIN="$coredns_out.tmp" go install -ldflags "-s -w" "github.com/coredns/coredns@$coredns_v"
  rm -rf "$coredns_out" && mv "$coredns_out.tmp" "$coredns_out"  # whole or absent, never half
  log "coredns built in $((SECONDS - start)) s"
fi

v="$KUBERNETES_VERSION"
out="$cache/kubernetes-$v"
missing=()
for cmd in kubelet kube-proxy; do
  [[ -x "$out/$cmd" ]] || missing+=("$cmd")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

start=$SECONDS
log "kubernetes $v: building ${missing[*]}"
work="$cache/.work/realnode-$v"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
go mod init mstc.local/realnodebuild >/dev/null 2>&1
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local paths;
# outside its tree, the published v0.<minor>.<patch> of each is the same code. The go.mod
# comes from the module proxy through go itself (its cache, its GOPROXY/GONOSUMDB settings).
staging="v0.${v#v1.}"
gomod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[[ -f "$gomod" ]] || { log "no go.mod of k8s.io/kubernetes@$v from go mod download"; exit 1; }
args=()
for m in $(awk '/=> \.\/staging\/src\// {print $1}' "$gomod"); do
  args+=(-replace "$m=$m@$staging")
done
go mod edit "${args[@]}"
go get "k8s.io/kubernetes@$v" >/dev/null 2>&1

ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$(cut -d. -f2 <<<"$v")"
  ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
mkdir -p "$out"
for cmd in "${missing[@]}"; do
  go get "k8s.io/kubernetes/cmd/$cmd@$v" >/dev/null 2>&1
  go build -ldflags "$ld" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  mv "$out/$cmd.tmp" "$out/$cmd"  # whole or absent, never half
  log "kubernetes: $cmd built"
done
log "real node binaries ready in $((SECONDS - start)) s"
