#!/usr/bin/env bash
# Build the Vertical Pod Autoscaler recommender from its Go module into a cache outside the repo:
#   ${OOMTUNER_CACHE:-$HOME/.cache/oomtuner}/vpa/<vpa-version>/bin/recommender
# and copy VPA's CRDs next to it:
#   ${OOMTUNER_CACHE:-$HOME/.cache/oomtuner}/vpa/<vpa-version>/share/vpa-v1-crd-gen.yaml
#
# The version comes from the wrapper module next to this script (hack/vpa/go.mod), which
# also pins go.sum. go install would refuse the module if it had replace lines, so we
# build from the wrapper like hack/lab/build.sh does (v1.8.1 itself has no replace lines).
#
# Usage: build.sh [--force] [--print-dir] [--crds-only]
# Idempotent: skipped when the stamp matches (version, Go version, ldflags). --crds-only downloads
# the module (a few MB from the Go module proxy) and copies the CRDs, without building anything.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MOD=k8s.io/autoscaler/vertical-pod-autoscaler
force=0
print_dir=0
crds_only=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --print-dir) print_dir=1 ;;
    --crds-only) crds_only=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

VERSION="$(awk -v m="$MOD" '$1 == "require" && $2 == m { print $3; exit } $1 == m && $2 ~ /^v/ { print $2; exit }' "$HERE/go.mod")"
[[ -n $VERSION ]] || { echo "build.sh: $MOD not found in $HERE/go.mod" >&2; exit 1; }
DIR="${OOMTUNER_CACHE:-$HOME/.cache/oomtuner}/vpa/$VERSION"
if [[ $print_dir == 1 ]]; then echo "$DIR"; exit 0; fi
command -v go >/dev/null || { echo "build.sh: go is not on PATH" >&2; exit 1; }
mkdir -p "$DIR/bin" "$DIR/share"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"
GOVERSION="$(go env GOVERSION)"
LDFLAGS="-s -w"
stamp="$DIR/bin/.recommender.stamp"
want="recommender $VERSION $GOVERSION ldflags=$LDFLAGS"

srcdir="$(cd "$HERE" && go list -m -f '{{.Dir}}' "$MOD")"
install -m 0644 "$srcdir/deploy/vpa-v1-crd-gen.yaml" "$DIR/share/vpa-v1-crd-gen.yaml"
if [[ $crds_only == 1 ]]; then echo "--> vpa $VERSION: CRDs in $DIR/share"; exit 0; fi

if [[ $force == 0 && -x "$DIR/bin/recommender" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "--> vpa recommender $VERSION: cached in $DIR/bin"
  exit 0
fi
echo "--> vpa recommender $VERSION: building $MOD/pkg/recommender ($GOVERSION) ..."
start="$(date +%s.%N)"
tmp="$DIR/bin/.recommender.tmp.$$"
(cd "$HERE" && go build -ldflags "$LDFLAGS" -o "$tmp" "$MOD/pkg/recommender")
mv -f "$tmp" "$DIR/bin/recommender"
echo "$want" >"$stamp"
echo "--> vpa recommender $VERSION: built in $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s -> $DIR/bin/recommender"
