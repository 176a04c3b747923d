#!/usr/bin/env bash
# Build Velero for the lab from Go modules, once per version: the velero server/CLI binary
# (lab/go/velero, github.com/vmware-tanzu/velero) and its AWS object-store plugin
# (lab/go/velero/plugin-aws, github.com/vmware-tanzu/velero-plugin-for-aws).
#
# The pins live in the two go.mod files. The result goes to
#   ${HCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridcloud-migration}/lab/<key>/
#     bin/velero                        the server and CLI (one binary, as upstream ships it)
#     plugins/velero-plugin-for-aws     the plugin; `velero server --plugin-dir` takes this folder
#     stamp
# where <key> names the Velero and plugin versions plus a hash of lab/go/velero's go.mod, go.sum
# and .go files, this script and the Go version. As in lab/build.sh (same cache, same lock, so
# two heavy Go builds never run at once): a directory is complete only when its `stamp`
# exists, the build happens in a temporary directory renamed into place at the end, and with
# the key unchanged nothing is rebuilt. Then .build/lab/velero in the checkout points at it.
#
# A separate script from lab/build.sh because only the Velero tests need these binaries, and
# they take minutes to build: the Kubernetes lab does not wait for them, and a Velero pin
# change does not rebuild Kubernetes. Usage: bash lab/build-velero.sh [--force]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$repo/lab/go/velero
cache=${HCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridcloud-migration}/lab
link=$repo/.build/lab/velero
force=false
case ${1-} in
    --force) force=true ;;
    '') ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if ! [ -x "$go" ]; then
    echo "lab/build-velero.sh: no Go toolchain (looked for 'go' on PATH and /usr/local/go/bin/go)." \
        "Fix: install Go >= 1.26 or set GO=/path/to/go." >&2
    exit 1
fi
# Builds must not depend on the caller's Go settings, nor on a go.work above the checkout.
export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0

# The version a module requires of another, from its go.mod (no network needed).
required() { # <module dir> <module path>
    (cd "$1" && "$go" mod edit -json) |
        grep -A1 "\"Path\": \"$2\"" | sed -n 's/.*"Version": "\(.*\)".*/\1/p' | head -n1
}

velero_version=$(required "$src" github.com/vmware-tanzu/velero)
plugin_version=$(required "$src/plugin-aws" github.com/vmware-tanzu/velero-plugin-for-aws)
go_version=$(cd "$src" && "$go" env GOVERSION)
for pin in velero_version plugin_version go_version; do
    if [ -z "${!pin}" ]; then
        echo "lab/build-velero.sh: could not read $pin from $src/go.mod or $src/plugin-aws/go.mod" >&2
        exit 1
    fi
done

inputs_hash=$(
    cd "$repo"
    {
        find lab/go/velero -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print |
            LC_ALL=C sort | xargs sha256sum
        sha256sum lab/build-velero.sh
        echo "$go_version"
    } | sha256sum | cut -c1-12
)
key=velero-$velero_version-aws-$plugin_version-$inputs_hash
dest=$cache/$key

mkdir -p "$cache"
# The lock lab/build.sh takes: one heavy Go build at a time per cache.
exec 9>"$cache/.lock"
flock 9

point_link() {
    mkdir -p "$(dirname "$link")"
    ln -sfn "$dest" "$link"
}

if [ -f "$dest/stamp" ] && ! $force; then
    point_link
    echo "lab-build-velero: up to date: $key (.build/lab/velero -> $dest)"
    exit 0
fi

# Leftovers of interrupted builds (we hold the lock, so none is running).
rm -rf "$cache"/.tmp.*
tmp=$(mktemp -d "$cache/.tmp.$key.XXXXXX")
chmod 755 "$tmp" # mktemp makes it 0700
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/bin" "$tmp/plugins"

start=$(date +%s)
step() { # <label> <module dir> <go build args...>
    local label=$1 dir=$2 t0
    shift 2
    t0=$(date +%s)
    echo "lab-build-velero: building $label ..."
    (cd "$dir" && "$go" build -trimpath -buildvcs=false "$@")
    echo "lab-build-velero: $label built in $(($(date +%s) - t0))s"
}

# Velero's release build (hack/build.sh) stamps the version; `velero version` and the
# server's startup log show it. The image registry stays upstream's default (velero/).
buildinfo=github.com/vmware-tanzu/velero/pkg/buildinfo
velero_ldflags="-s -w -X $buildinfo.Version=$velero_version -X $buildinfo.GitTreeState=clean"
step "velero $velero_version" "$src" -ldflags "$velero_ldflags" \
    -o "$tmp/bin/velero" github.com/vmware-tanzu/velero/cmd/velero
step "velero-plugin-for-aws $plugin_version" "$src/plugin-aws" -ldflags "-s -w" \
    -o "$tmp/plugins/velero-plugin-for-aws" github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws

seconds=$(($(date +%s) - start))
cat >"$tmp/stamp" <<EOF
key=$key
velero=$velero_version
velero_plugin_for_aws=$plugin_version
go=$go_version
built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_seconds=$seconds
EOF
rm -rf "$dest" # an unstamped directory, or --force
mv -T "$tmp" "$dest"
trap - EXIT
point_link
echo "lab-build-velero: built $key in ${seconds}s: $(du -sh "$dest" | cut -f1) in $dest"
echo "lab-build-velero: .build/lab/velero -> $dest"
