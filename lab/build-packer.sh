#!/usr/bin/env bash
# Build Packer and the three plugins the worker image template uses, from Go modules, once per
# version: packer (lab/go/packer, github.com/hashicorp/packer) and the amazon, openstack and
# ansible plugins (lab/go/packer/plugin-*, github.com/hashicorp/packer-plugin-*), each a module
# of ours that only pins the upstream release (and its go-cty replace line) as a `tool`.
#
# The result goes to
#   ${HCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridcloud-migration}/lab/<key>/
#     bin/packer
#     bin/packer-plugin-{amazon,openstack,ansible}   the plugin binaries as built
#     plugins/github.com/hashicorp/<name>/...        the same, installed by
#                                                    `packer plugins install --path`: point
#                                                    PACKER_PLUGIN_PATH here and `packer init`
#                                                    finds them (it would fetch from GitHub)
#     stamp
# where <key> names the Packer version plus a hash of lab/go/packer's go.mod, go.sum files, this
# script and the Go version. As in lab/build.sh (same cache, same lock): a directory is complete
# only when its `stamp` exists, the build happens in a temporary directory renamed into place
# at the end, and with the key unchanged nothing is rebuilt. Then .build/lab/packer in the
# checkout points at it. Usage: bash lab/build-packer.sh [--force]
#
# The module proxy serves only some releases of these modules (no version lists): the pins are
# the newest found served. The checksum database has no entry for packer-plugin-ansible, so its
# module is exempt from it (GONOSUMDB below); go.sum still pins its hash.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$repo/lab/go/packer
cache=${HCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridcloud-migration}/lab
link=$repo/.build/lab/packer
force=false
case ${1-} in
    --force) force=true ;;
    '') ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if ! [ -x "$go" ]; then
    echo "lab/build-packer.sh: no Go toolchain (looked for 'go' on PATH and /usr/local/go/bin/go)." \
        "Fix: install Go >= 1.26 or set GO=/path/to/go." >&2
    exit 1
fi
# Builds must not depend on the caller's Go settings, nor on a go.work above the checkout.
export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0
export GONOSUMDB=github.com/hashicorp/packer-plugin-ansible

required() { # <module dir> <module path>
    (cd "$1" && "$go" mod edit -json) |
        grep -A1 "\"Path\": \"$2\"" | sed -n 's/.*"Version": "\(.*\)".*/\1/p' | head -n1
}

packer_version=$(required "$src" github.com/hashicorp/packer)
go_version=$(cd "$src" && "$go" env GOVERSION)
plugins=(amazon openstack ansible)
for name in "${plugins[@]}"; do
    if [ -z "$(required "$src/plugin-$name" "github.com/hashicorp/packer-plugin-$name")" ]; then
        echo "lab/build-packer.sh: could not read the packer-plugin-$name pin from $src/plugin-$name/go.mod" >&2
        exit 1
    fi
done
if [ -z "$packer_version" ] || [ -z "$go_version" ]; then
    echo "lab/build-packer.sh: could not read the Packer pin from $src/go.mod" >&2
    exit 1
fi

inputs_hash=$(
    cd "$repo"
    {
        find lab/go/packer -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print |
            LC_ALL=C sort | xargs sha256sum
        sha256sum lab/build-packer.sh
        echo "$go_version"
    } | sha256sum | cut -c1-12
)
key=packer-$packer_version-$inputs_hash
dest=$cache/$key

mkdir -p "$cache"
# The lock lab/build.sh takes: one heavy Go build at a time per cache.
exec 9>"$cache/.lock"
flock 9

point_link() {
    mkdir -p "$(dirname "$link")"
    ln -sfn "$dest" "$link.tmp.$$"
    mv -T "$link.tmp.$$" "$link"
}

if [ -f "$dest/stamp" ] && ! $force; then
    point_link
    echo "lab-build-packer: up to date: $key (.build/lab/packer -> $dest)"
    exit 0
fi

rm -rf "$cache"/.tmp.*
tmp=$(mktemp -d "$cache/.tmp.$key.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/bin" "$tmp/plugins"

start=$(date +%s)
step() { # <label> <module dir> <go build args...>
    local label=$1 dir=$2 t0
    shift 2
    t0=$(date +%s)
    echo "lab-build-packer: building $label ..."
    (cd "$dir" && "$go" build -trimpath -buildvcs=false "$@")
    echo "lab-build-packer: $label built in $(($(date +%s) - t0))s"
}

step "packer $packer_version" "$src" -ldflags "-s -w" -o "$tmp/bin/packer" github.com/hashicorp/packer
versions="packer=$packer_version"
for name in "${plugins[@]}"; do
    version=$(required "$src/plugin-$name" "github.com/hashicorp/packer-plugin-$name")
    step "packer-plugin-$name $version" "$src/plugin-$name" -ldflags "-s -w" \
        -o "$tmp/bin/packer-plugin-$name" "github.com/hashicorp/packer-plugin-$name"
    # The layout `packer init` looks for (name_vX.Y.Z_x5.N_os_arch plus its SHA256SUM file),
    # made by Packer itself from the binary's own `describe` answer.
    PACKER_PLUGIN_PATH=$tmp/plugins CHECKPOINT_DISABLE=1 \
        "$tmp/bin/packer" plugins install --path "$tmp/bin/packer-plugin-$name" \
        "github.com/hashicorp/$name"
    versions="$versions
packer_plugin_$name=$version"
done

seconds=$(($(date +%s) - start))
cat >"$tmp/stamp" <<EOF
key=$key
$versions
go=$go_version
built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_seconds=$seconds
EOF
rm -rf "$dest"
mv -T "$tmp" "$dest"
trap - EXIT
point_link
echo "lab-build-packer: built $key in ${seconds}s: $(du -sh "$dest" | cut -f1) in $dest"
echo "lab-build-packer: .build/lab/packer -> $dest"
