#!/usr/bin/env bash
# Builds the real node's images without Docker and without a registry, as OCI archives that
# `ctr images import` reads, cached by content under $MSTC_CACHE_DIR/images/:
#   pause  the pod sandbox image: one static Go program (pause.go) that blocks
#   base   a minimal Debian (debootstrap --variant=minbase) from Debian's archive
#   python the same with Debian's python3 (3.11) and pip: the python:3.11-slim of the Dockerfiles
#   job    the example job (examples/job/Dockerfile), built by buildah on the python image
#   worker the project's Dockerfile, built by buildah on the python image
#   rabbitmq  Debian's rabbitmq-server (3.10) on minbase, its user as uid/gid 999 (the official
#             image's, which the chart's securityContext names), management plugin enabled
#   minio  the stack's own MinIO binary (the version in stack/versions.env) on minbase
#   tasks  pods that drain a task queue: examples/tasks/Dockerfile, the client (client/) installed
#          on the python image and examples/tasks/drain.py as the entrypoint
# Usage: stack/images/build.sh pause|base|python|job|worker|rabbitmq|minio|tasks
#        -> prints the archive's path on stdout.
# Each archive's name carries a hash of what it is made from (its recipe below, the source,
# the suite and mirror), so a change to any of them makes a new archive and an unchanged one is
# reused; the image's tag is that hash, so the node never mixes two builds under one name.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${MSTC_CACHE_DIR:-$HOME/.cache/mstc-stack}/images"
suite="${MSTC_DEBIAN_SUITE:-bookworm}"
mirror="${MSTC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

key() { cat "$@" | sha256sum | cut -c1-16; }

# pack NAME TAG LAYOUT: the OCI layout as one tar, atomically, at $cache/NAME-TAG.tar
pack() {
  local out="$cache/$1-$2.tar"
  tar -C "$3" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  find "$cache" -maxdepth 1 -name "$1-*.tar" ! -name "$1-$2.tar" -delete  # older recipes
  echo "$out"
}

build_pause() {
  local tag out
  tag=$(key <(declare -f build_pause) "$here/pause.go" <(go version))
  out="$cache/pause-$tag.tar"
  [[ -f "$out" ]] && { echo "$out"; return; }
  log "pause $tag: building"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/pause" "$here/pause.go"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$tag"
  umoci insert --image "$work/oci:$tag" "$work/pause" /pause
  umoci config --image "$work/oci:$tag" --config.entrypoint /pause --os linux \
    --architecture "$(go env GOARCH)"
  umoci gc --layout "$work/oci"
  pack pause "$tag" "$work/oci"
}

# debian_image ROLE [PACKAGE...]: Debian's minbase plus the packages, as one layer.
debian_image() {
  local role="$1" include tag out rootfs
  shift
  include=$(IFS=,; echo "$*")
  tag=$(key <(declare -f debian_image) <(printf '%s %s %s\n' "$suite" "$mirror" "$include"))
  out="$cache/$role-$tag.tar"
  [[ -f "$out" ]] && { echo "$out"; return; }
  log "$role $tag: debootstrap $suite from $mirror ${include:+with $include}"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$tag"
  umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
  rootfs="$work/bundle/rootfs"
  # Straight into the empty bundle's rootfs, so repack takes the whole tree as one layer.
  debootstrap --variant=minbase ${include:+--include="$include"} "$suite" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; return 1; }
  # What a container never needs from it: package caches, device nodes (the runtime makes /dev).
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/dev/* \
    "$rootfs"/var/log/*
  # pip installs where it is told, as in the python images the project's Dockerfiles name.
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  umoci repack --image "$work/oci:$tag" "$work/bundle"
  umoci config --image "$work/oci:$tag" --config.cmd /bin/bash --os linux \
    --architecture "$(dpkg --print-architecture)" \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  umoci gc --layout "$work/oci"
  pack "$role" "$tag" "$work/oci"
}

# app_image ROLE FIXUP ENTRY CMD PATH_PRE [PACKAGE...]: as debian_image, then FIXUP (a function)
# run on the rootfs, and the image's entrypoint (ENTRY, may be empty), command and PATH
# prefix set; the fixup's body and $fixup_input (a file it copies in) go into the hash.
app_image() {
  local role="$1" fixup="$2" entry="$3" cmd="$4" path_pre="$5" include tag out rootfs
  shift 5
  include=$(IFS=,; echo "$*")
  tag=$(key <(declare -f app_image "$fixup") ${fixup_input:-} \
    <(printf '%s %s %s %s %s %s\n' "$suite" "$mirror" "$include" "$entry" "$cmd" "$path_pre"))
  out="$cache/$role-$tag.tar"
  [[ -f "$out" ]] && { echo "$out"; return; }
  log "$role $tag: debootstrap $suite from $mirror ${include:+with $include}"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$tag"
  umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
  rootfs="$work/bundle/rootfs"
  debootstrap --variant=minbase ${include:+--include="$include"} "$suite" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; return 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/dev/* \
    "$rootfs"/var/log/*
  "$fixup" "$rootfs"
  umoci repack --image "$work/oci:$tag" "$work/bundle"
  umoci config --image "$work/oci:$tag" --config.cmd "$cmd" ${entry:+--config.entrypoint "$entry"} \
    --os linux --architecture "$(dpkg --print-architecture)" \
    --config.env "PATH=${path_pre:+$path_pre:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  umoci gc --layout "$work/oci"
  pack "$role" "$tag" "$work/oci"
}

build_base() { debian_image base; }
# Stands in for the python:3.11-slim images the Dockerfiles name (bookworm's python3 is 3.11).
build_python() { debian_image python python3 python3-pip python-is-python3 ca-certificates; }

# The official rabbitmq image's user is uid/gid 999 (the chart runs the pod as that); Debian's
# package makes a system user with another id, so it is renumbered and its files follow. Logs go
# to the console (the chart's root filesystem is read-only), as in the official image; what it
# still writes as files goes to /tmp.
rabbitmq_fixup() {
  local rootfs="$1"
  chroot "$rootfs" groupmod -g 999 rabbitmq
  chroot "$rootfs" usermod -u 999 -g 999 rabbitmq
  # Its log dir (the upgrade log, crash dumps) where the chart's pod has a writable volume.
  rm -rf "$rootfs"/var/log/rabbitmq && ln -s /tmp "$rootfs"/var/log/rabbitmq
  mkdir -p "$rootfs"/var/lib/rabbitmq "$rootfs"/etc/rabbitmq/conf.d
  rm -f "$rootfs"/var/lib/rabbitmq/.erlang.cookie
  echo '[rabbitmq_management,rabbitmq_prometheus].' >"$rootfs"/etc/rabbitmq/enabled_plugins
  printf 'log.console = true\nlog.file = false\n' >"$rootfs"/etc/rabbitmq/conf.d/10-console.conf
  chroot "$rootfs" chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /etc/rabbitmq
}
build_rabbitmq() {
  app_image rabbitmq rabbitmq_fixup "" rabbitmq-server /usr/lib/rabbitmq/bin rabbitmq-server
}

# MinIO: the stack's own binary (built by stack/build.sh at the pinned version).
minio_binary() {
  # shellcheck source=../versions.env
  source "$here/../versions.env"
  echo "${MSTC_CACHE_DIR:-$HOME/.cache/mstc-stack}/minio-$MINIO_VERSION/minio"
}
minio_fixup() { install -m 0755 "$(minio_binary)" "$1/usr/bin/minio"; }
build_minio() {
  [[ -x "$(minio_binary)" ]] || { log "no MinIO binary at $(minio_binary): make stack-build"; return 1; }
  fixup_input="$(minio_binary)" app_image minio minio_fixup /usr/bin/minio server /usr/local/bin
}

# dockerfile_image ROLE TAG BASE_ARCHIVE CONTEXT: the project's own Dockerfile in CONTEXT, built
# by buildah (no daemon) on BASE_ARCHIVE's image in place of its first FROM. buildah's storage
# lives in the temporary dir, so nothing of it stays on the machine. RUN steps use the host's
# network and, mounted for the step only, the host's CA bundle (the package index is reached
# through this machine's TLS settings) and a uv setting to use it; none ends up in the image.
dockerfile_image() {
  local role="$1" tag="$2" base="$3" context="$4" base_id
  # TMPDIR: where buildah keeps RUN --mount=type=cache dirs (the Dockerfile's uv cache).
  local b=(env TMPDIR="$cache/buildah-tmp" buildah --root "$work/buildah" --runroot "$work/buildah-run"
    --storage-driver vfs)
  mkdir -p "$cache/buildah-tmp"
  # buildah also keeps a blob cache in /var/lib/containers/cache (no flag moves it): removed
  # afterwards when this build made it.
  [[ -e /var/lib/containers ]] || trap 'rm -rf "$work" /var/lib/containers' EXIT
  log "$role $tag: buildah build $context on $(basename "$base")"
  base_id=$("${b[@]}" pull -q "oci-archive:$base")
  printf 'native-tls = true\n' >"$work/uv.toml"  # uv then trusts that bundle, as pip does
  [[ "$role" != worker ]] || uv_image
  # The base replaces the first FROM, and is the PYTHON_IMAGE build argument where there is one.
  "${b[@]}" build -q --isolation chroot --network host --pull=never --from "$base_id" \
    --build-arg "PYTHON_IMAGE=$base_id" \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    -v "$work/uv.toml:/etc/uv/uv.toml:ro" \
    -t "mstc.local/$role:$tag" "$context" >&2
  "${b[@]}" push -q "mstc.local/$role:$tag" "oci-archive:$work/$role.tar:$tag" >&2
  mkdir -p "$work/$role" && tar -C "$work/$role" -xf "$work/$role.tar"
  pack "$role" "$tag" "$work/$role"
}

# The uv image the worker's Dockerfile copies /uv from, made here from uv's wheel on PyPI (same
# version, fetched by the python image's pip), under the name the Dockerfile gives, in the
# build's own storage: nothing is pulled from a registry.
uv_image() {
  local ref version
  ref=$(sed -n 's|^COPY --from=\(ghcr.io/astral-sh/uv:[^ ]*\) .*|\1|p' "$repo/Dockerfile")
  version="${ref##*:}"
  mkdir -p "$work/uv"
  cat >"$work/uv/Containerfile" <<EOF_UV
FROM $base_id AS wheel
RUN pip download --quiet --no-deps --only-binary=:all: -d /w "uv==$version" \\
 && python -m zipfile -e /w/uv-*.whl /w/x && install -m 0755 /w/x/uv-$version.data/scripts/uv /uv
FROM scratch
COPY --from=wheel /uv /uv
EOF_UV
  "${b[@]}" build -q --isolation chroot --network host --pull=never \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    -t "$ref" -f "$work/uv/Containerfile" "$work/uv" >&2
}

build_worker() {
  local python tag out
  python=$(build_python)
  tag=$(key <(declare -f build_worker dockerfile_image uv_image) <(basename "$python") \
    "$repo/Dockerfile" "$repo/pyproject.toml" "$repo/uv.lock" "$repo/client/pyproject.toml" \
    "$repo/README.md" <(cd "$repo" && find mstc_worker -type f -name '*.py' | sort | xargs cat))
  out="$cache/worker-$tag.tar"
  [[ -f "$out" ]] && { echo "$out"; return; }
  dockerfile_image worker "$tag" "$python" "$repo"
}

build_job() {
  local python tag out
  python=$(build_python)
  tag=$(key <(declare -f build_job dockerfile_image) <(basename "$python") \
    "$repo/examples/job/Dockerfile" "$repo/examples/job/requirements.txt" "$repo/examples/job/job.py")
  out="$cache/job-$tag.tar"
  [[ -f "$out" ]] && { echo "$out"; return; }
  dockerfile_image job "$tag" "$python" "$repo/examples/job"
}

# Its context is assembled here: the Dockerfile's directory and the client's package beside it
# (the repo's .dockerignore keeps the client out of a context at the repo's root).
build_tasks() {
  local python tag out context
  python=$(build_python)
  tag=$(key <(declare -f build_tasks dockerfile_image) <(basename "$python") \
    "$repo/examples/tasks/Dockerfile" "$repo/examples/tasks/drain.py" "$repo/client/pyproject.toml" \
    <(cd "$repo/client" && find mstc_client -type f ! -path '*__pycache__*' | sort | xargs cat))
  out="$cache/tasks-$tag.tar"
  [[ -f "$out" ]] && { echo "$out"; return; }
  context="$work/tasks-context"
  mkdir -p "$context/client"
  cp "$repo/examples/tasks/Dockerfile" "$repo/examples/tasks/drain.py" "$context/"
  cp "$repo/client/pyproject.toml" "$context/client/"
  (cd "$repo/client" && find mstc_client -type f ! -path '*__pycache__*' \
    -exec cp --parents {} "$context/client/" \;)
  dockerfile_image tasks "$tag" "$python" "$context"
}

mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case "${1:-}" in
  pause) build_pause ;;
  base) build_base ;;
  python) build_python ;;
  job) build_job ;;
  worker) build_worker ;;
  rabbitmq) build_rabbitmq ;;
  minio) build_minio ;;
  tasks) build_tasks ;;
  *) echo "usage: $0 pause|base|python|job|worker|rabbitmq|minio|tasks" >&2; exit 2 ;;
esac
