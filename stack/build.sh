#!/usr/bin/env bash
# Builds the local stack's Go binaries (Kubernetes control plane, etcd, KWOK, Helm, MinIO)
# from their Go modules, once per pinned version. Each part is built inside a throwaway Go
# module so that upstream `replace` directives (which `go install pkg@version` refuses) do not
# matter, and Kubernetes' staging modules can be pointed at their published versions.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${MSTC_CACHE_DIR:-$HOME/.cache/mstc-stack}"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# done_dir NAME VERSION -> prints the cache dir; returns 0 when the build is already there.
part_dir() { printf '%s/%s-%s' "$cache" "$1" "$2"; }

# new_module DIR: an empty main module to build someone else's packages in.
new_module() {
  rm -rf "$1" && mkdir -p "$1"
  (cd "$1" && go mod init mstc.local/stackbuild >/dev/null 2>&1)
}

build_kubernetes() {
  local v="$KUBERNETES_VERSION" out cmd missing=()
  out="$(part_dir kubernetes "$v")"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x "$out/$cmd" ]] || missing+=("$cmd")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "kubernetes $v: building ${missing[*]}"
  local work="$cache/.work/kubernetes-$v" staging="v0.${v#v1.}"
  new_module "$work"
  cd "$work"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local
  # paths; outside its tree, the published v0.<minor>.<patch> of each is the same code.
  # The Go toolchain fetches that go.mod, so the build follows GOPROXY/GONOSUMDB like every
  # other step; `-json` names the downloaded file (GoMod).
  local gomod mods args=()
  gomod=$(go mod download -json "k8s.io/kubernetes@$v" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f "$gomod" ]] || { log "kubernetes $v: go mod download named no go.mod"; return 1; }
  mods=$(awk '/=> \.\/staging\/src\// {print $1}' "$gomod")
  for m in $mods; do args+=(-replace "$m=$m@$staging"); done
  go mod edit "${args[@]}"
  go get "k8s.io/kubernetes@$v" >/dev/null
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$(cut -d. -f2 <<<"$v")"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$out"
  for cmd in "${missing[@]}"; do
    go get "k8s.io/kubernetes/cmd/$cmd@$v" >/dev/null
    go build -ldflags "$ld" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$out/$cmd.tmp" "$out/$cmd"
    log "kubernetes: $cmd built"
  done
}

# build_plain NAME VERSION MODULE PACKAGE BINARY [LDFLAGS]
build_plain() {
  local name="$1" v="$2" mod="$3" pkg="$4" bin="$5" ld="${6:-}" out
  out="$(part_dir "$name" "$v")"
  [[ -x "$out/$bin" ]] && return 0
  log "$name $v: building $pkg"
  local work="$cache/.work/$name-$v"
  new_module "$work"
  cd "$work"
  go get "$mod@$v" >/dev/null
  go get "$pkg@$v" >/dev/null
  mkdir -p "$out.tmp"
  go build -ldflags "-s -w $ld" -o "$out.tmp/$bin" "$pkg"
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "$name: $bin built"
}

build_etcd() {
  build_plain etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 etcd
}
build_kwok() {
  build_plain kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok kwok \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
}
build_helm() {
  build_plain helm "$HELM_VERSION" helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm helm \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
}
build_minio() {
  build_plain minio "$MINIO_VERSION" github.com/minio/minio github.com/minio/minio minio
}

parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=(etcd minio kwok helm kubernetes)
mkdir -p "$cache"
for p in "${parts[@]}"; do
  start=$SECONDS
  ( "build_$p" )
  log "$p ready in $((SECONDS - start)) s"
done
[[ "${MSTC_STACK_REAL_NODE:-}" != 1 ]] || "$here/realnode_build.sh"  # the real node (stack/realnode.py)
