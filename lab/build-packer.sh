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
# where <key> names the Packer version plus a hash of lab/go/packer's go.mod and go.sum files,
# this script, lab/go-build-lib.sh (the cache, lock and stamp rules it shares with
# lab/build-velero.sh) and the Go version. Usage: bash lab/build-packer.sh [--force]
#
# The module proxy serves only some releases of these modules (no version lists): the pins are
# the newest found served. The checksum database has no entry for packer-plugin-ansible, so its
# module is exempt from it (GONOSUMDB below); go.sum still pins its hash.
set -euo pipefail
# shellcheck source=lab/go-build-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-build-lib.sh"
gobuild_init packer "$@"
export GONOSUMDB=github.com/hashicorp/packer-plugin-ansible

packer_version=$(required "$src" github.com/hashicorp/packer)
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
gobuild_begin "packer-$packer_version"

gobuild_step "packer $packer_version" "$src" -ldflags "-s -w" -o "$tmp/bin/packer" github.com/hashicorp/packer
versions=("packer=$packer_version")
for name in "${plugins[@]}"; do
    version=$(required "$src/plugin-$name" "github.com/hashicorp/packer-plugin-$name")
    gobuild_step "packer-plugin-$name $version" "$src/plugin-$name" -ldflags "-s -w" \
        -o "$tmp/bin/packer-plugin-$name" "github.com/hashicorp/packer-plugin-$name"
    # The layout `packer init` looks for (name_vX.Y.Z_x5.N_os_arch plus its SHA256SUM file),
    # made by Packer itself from the binary's own `describe` answer.
    PACKER_PLUGIN_PATH=$tmp/plugins CHECKPOINT_DISABLE=1 \
        "$tmp/bin/packer" plugins install --path "$tmp/bin/packer-plugin-$name" \
        "github.com/hashicorp/$name"
    versions+=("packer_plugin_$name=$version")
done

gobuild_finish "${versions[@]}"
