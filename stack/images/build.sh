#!/usr/bin/env bash
# Builds the real node's images without Docker and without a registry, as OCI archives that
# `ctr images import` reads, cached by content under $MSTC_CACHE_DIR/images/:
#   pause  the pod sandbox image: one static Go program (pause.go) that blocks
#   base   a minimal Debian (debootstrap --variant=minbase) from Debian's archive
# Usage: stack/images/build.sh pause|base   -> prints the archive's path on stdout.
# Each archive's name carries a hash of what it is made from (its recipe below, the source,
# the suite and mirror), so a change to any of them makes a new archive and an unchanged one is
# reused; the image's tag is that hash, so the node never mixes two builds under one name.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
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

build_base() {
  local tag out
  tag=$(key <(declare -f build_base) <(printf '%s %s\n' "$suite" "$mirror"))
  out="$cache/base-$tag.tar"
  [[ -f "$out" ]] && { echo "$out"; return; }
  log "base $tag: debootstrap $suite from $mirror"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$tag"
  umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
  # Straight into the empty bundle's rootfs, so repack takes the whole tree as one layer.
  debootstrap --variant=minbase "$suite" "$work/bundle/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; return 1; }
  # What a container never needs from it: package caches, device nodes (the runtime makes /dev).
  rm -rf "$work"/bundle/rootfs/var/cache/apt/archives/*.deb "$work"/bundle/rootfs/var/lib/apt/lists/* \
    "$work"/bundle/rootfs/dev/* "$work"/bundle/rootfs/var/log/*
  umoci repack --image "$work/oci:$tag" "$work/bundle"
  umoci config --image "$work/oci:$tag" --config.cmd /bin/bash --os linux \
    --architecture "$(dpkg --print-architecture)" \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  umoci gc --layout "$work/oci"
  pack base "$tag" "$work/oci"
}

mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case "${1:-}" in
  pause) build_pause ;;
  base) build_base ;;
  *) echo "usage: $0 pause|base" >&2; exit 2 ;;
esac
