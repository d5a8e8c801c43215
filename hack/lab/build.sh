#!/usr/bin/env bash
# Build the lab's binaries from Go modules into a cache outside the repo:
#   ${OOMTUNER_CACHE:-$HOME/.cache/oomtuner}/<k8s-version>/bin/
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3), kwok (sigs.k8s.io/kwok), helm (helm.sh/helm/v3); and for
# the real node: `cni` (bridge, host-local, loopback, portmap from
# github.com/containernetworking/plugins, into <k8s-version>/cni/bin) and `images` (memhog and
# pause from hack/lab/images, as OCI archives in <k8s-version>/images).
#
# Versions come from the wrapper modules next to this script (hack/lab/*/go.mod),
# which also pin go.sum so builds are reproducible.
#
# Usage: build.sh [--force] [--print-bin-dir] [NAME...]
# Idempotent: a target whose stamp matches (version or source hash, Go version, flags) is skipped.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm kubelet cni images)

force=0
print_bin_dir=0
names=()
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --print-bin-dir) print_bin_dir=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "unknown flag: $arg" >&2; exit 2 ;;
    *) names+=("$arg") ;;
  esac
done
[[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")
for name in "${names[@]}"; do
  [[ " ${ALL[*]} " == *" $name "* ]] || { echo "unknown binary: $name (known: ${ALL[*]})" >&2; exit 2; }
done

command -v go >/dev/null || { echo "build.sh: go is not on PATH" >&2; exit 1; }

# The module version a wrapper requires, read from its go.mod (no network).
modver() { # dir module
  awk -v m="$2" '$1 == "require" && $2 == m { print $3; exit } $1 == m && $2 ~ /^v/ { print $2; exit }' "$HERE/$1/go.mod"
}

K8S_VERSION="$(modver k8s k8s.io/kubernetes)"
ETCD_VERSION="$(modver etcd go.etcd.io/etcd/server/v3)"
KWOK_VERSION="$(modver kwok sigs.k8s.io/kwok)"
HELM_VERSION="$(modver helm helm.sh/helm/v3)"
HELM_CLIENT_GO="$(modver helm k8s.io/client-go)"   # e.g. v0.35.1 -> helm's default kube version 1.35
CNI_VERSION="$(modver cni github.com/containernetworking/plugins)"

CACHE_ROOT="${OOMTUNER_CACHE:-$HOME/.cache/oomtuner}"
BIN="$CACHE_ROOT/$K8S_VERSION/bin"
# Kept out of bin/ (which `oomtuner lab env` puts on PATH): a plugin named `bridge` would
# shadow iproute2's.
CNI_BIN="$CACHE_ROOT/$K8S_VERSION/cni/bin"
CNI_PLUGINS=(main/bridge ipam/host-local main/loopback meta/portmap)
IMAGES="$CACHE_ROOT/$K8S_VERSION/images"
# The standalone kwok binary has no built-in stages (kwokctl adds its defaults to the
# config it writes), so keep kwok's default stages next to it; the lab passes them to kwok.
KWOK_STAGES="$CACHE_ROOT/$K8S_VERSION/share/kwok/stages"
KWOK_STAGE_FILES=(
  node/fast/node-initialize.yaml
  node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml
  pod/fast/pod-complete.yaml
  pod/fast/pod-delete.yaml
)
if [[ $print_bin_dir == 1 ]]; then echo "$BIN"; exit 0; fi
mkdir -p "$BIN"

GOVERSION="$(go env GOVERSION)"
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"

# A fixed build date keeps the binaries reproducible (the date of the 1.35.4 release tag
# is not in the module zip, so use a constant).
BUILD_DATE="2026-01-01T00:00:00Z"

semver_parts() { # v1.35.4 -> "1 35"
  local v="${1#v}"; echo "${v%%.*} $(echo "$v" | cut -d. -f2)"
}
read -r K8S_MAJOR K8S_MINOR <<<"$(semver_parts "$K8S_VERSION")"
read -r _ HELM_KUBE_MINOR <<<"$(semver_parts "$HELM_CLIENT_GO")"

k8s_ldflags() {
  local cb=k8s.io/component-base/version cg=k8s.io/client-go/pkg/version f="-s -w"
  for p in $cb $cg; do
    f+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$K8S_MAJOR -X $p.gitMinor=$K8S_MINOR"
    f+=" -X $p.gitTreeState=clean -X $p.buildDate=$BUILD_DATE"
  done
  echo "$f"
}

# name -> "wrapper-dir|package|version|tags|ldflags"
spec() {
  case "$1" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet)
      echo "k8s|k8s.io/kubernetes/cmd/$1|$K8S_VERSION|selinux,notest|$(k8s_ldflags)" ;;
    etcd)
      echo "etcd|go.etcd.io/etcd/server/v3|$ETCD_VERSION||-s -w" ;;
    kwok)
      echo "kwok|sigs.k8s.io/kwok/cmd/kwok|$KWOK_VERSION||-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$K8S_VERSION" ;;
    helm)
      local f="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      # helm's default Kubernetes version (helm template/lint without --kube-version) is 1.20
      # unless set; upstream sets it from its client-go version, which matches the lab here.
      for p in pkg/chartutil pkg/lint/rules; do
        f+=" -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=$HELM_KUBE_MINOR"
      done
      echo "helm|helm.sh/helm/v3/cmd/helm|$HELM_VERSION||$f" ;;
    *) echo "unknown binary: $1 (known: ${ALL[*]})" >&2; return 1 ;;
  esac
}

copy_kwok_stages() {
  local dir
  dir="$(cd "$HERE/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  rm -rf "$KWOK_STAGES" && mkdir -p "$KWOK_STAGES"
  for f in "${KWOK_STAGE_FILES[@]}"; do
    cp "$dir/kustomize/stage/$f" "$KWOK_STAGES/$(basename "$f")"
  done
  chmod u+w "$KWOK_STAGES"/*.yaml
  echo "$KWOK_VERSION" >"$KWOK_STAGES/VERSION"
}

kwok_stages_ok() {
  [[ -f "$KWOK_STAGES/VERSION" && "$(cat "$KWOK_STAGES/VERSION")" == "$KWOK_VERSION" ]]
}

# The CNI plugins, each a binary of its own in $CNI_BIN.
build_cni() {
  local plugin tmp
  mkdir -p "$CNI_BIN"
  for plugin in "${CNI_PLUGINS[@]}"; do
    tmp="$CNI_BIN/.$(basename "$plugin").tmp.$$"
    (cd "$HERE/cni" && go build -ldflags "-s -w" -o "$tmp" "github.com/containernetworking/plugins/plugins/$plugin")
    mv -f "$tmp" "$CNI_BIN/$(basename "$plugin")"
  done
}

# The images' source: what the images stamp hashes.
images_source_hash() {
  (cd "$HERE/images" && find . -type f \( -name '*.go' -o -name go.mod -o -name '*.py' \) | LC_ALL=C sort \
    | xargs sha256sum | sha256sum | cut -c1-16)
}

# memhog and pause, static, each in a one-layer OCI archive (hack/lab/images/oci.py).
build_images() {
  local arch prog
  arch="$(go env GOARCH)"
  mkdir -p "$IMAGES/bin"
  for prog in memhog pause; do
    (cd "$HERE/images" && go build -ldflags "-s -w" -o "$IMAGES/bin/$prog" "./$prog")
  done
  python3 "$HERE/images/oci.py" --binary "$IMAGES/bin/memhog" --arch "$arch" \
    --name lab.oomtuner.dev/memhog:v1 --out "$IMAGES/memhog.tar"
  # The sandbox image, also under the name the lab's pods use (kwok never pulls it).
  python3 "$HERE/images/oci.py" --binary "$IMAGES/bin/pause" --arch "$arch" \
    --name lab.oomtuner.dev/pause:3.10 --name registry.k8s.io/pause:3.10 --out "$IMAGES/pause.tar"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

echo "==> lab binaries: k8s $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION, cni plugins $CNI_VERSION ($GOVERSION)"
echo "==> cache: $BIN"
total_start="$(now)"
built=0
for name in "${names[@]}"; do
  case "$name" in
    cni|images)
      if [[ $name == cni ]]; then
        version="$CNI_VERSION" stamp="$CNI_BIN/.stamp" out="$CNI_BIN/portmap"
      else
        version="source $(images_source_hash)" stamp="$IMAGES/.stamp" out="$IMAGES/pause.tar"
      fi
      want="$name $version $GOVERSION"
      if [[ $force == 0 && -e "$out" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "--> $name $version: cached"
        continue
      fi
      echo "--> $name $version: building ..."
      start="$(now)"
      "build_$name"
      echo "$want" >"$stamp"
      echo "--> $name $version: built in $(elapsed "$start")s"
      built=$((built + 1))
      continue
      ;;
  esac
  IFS='|' read -r dir pkg version tags ldflags <<<"$(spec "$name")"
  stamp="$BIN/.$name.stamp"
  want="$name $version $GOVERSION tags=$tags ldflags=$ldflags"
  if [[ $force == 0 && -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "--> $name $version: cached"
    if [[ $name == kwok ]] && ! kwok_stages_ok; then
      copy_kwok_stages && echo "--> kwok $version: default stages copied to $KWOK_STAGES"
    fi
    continue
  fi
  echo "--> $name $version: building $pkg ..."
  start="$(now)"
  tmp="$BIN/.$name.tmp.$$"
  (cd "$HERE/$dir" && go build ${tags:+-tags "$tags"} -ldflags "$ldflags" -o "$tmp" "$pkg")
  mv -f "$tmp" "$BIN/$name"
  echo "$want" >"$stamp"
  if [[ $name == kwok ]]; then copy_kwok_stages; fi
  echo "--> $name $version: built in $(elapsed "$start")s"
  built=$((built + 1))
done
echo "==> done: $built built, $(( ${#names[@]} - built )) cached, $(elapsed "$total_start")s total"
