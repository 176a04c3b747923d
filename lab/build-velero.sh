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
# and .go files, this script, lab/go-build-lib.sh (the cache, lock and stamp rules it shares with
# lab/build-packer.sh) and the Go version.
#
# A separate script from lab/build.sh because only the Velero tests need these binaries, and
# they take minutes to build: the Kubernetes lab does not wait for them, and a Velero pin
# change does not rebuild Kubernetes. Usage: bash lab/build-velero.sh [--force]
set -euo pipefail
# shellcheck source=lab/go-build-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-build-lib.sh"
gobuild_init velero "$@"

velero_version=$(required "$src" github.com/vmware-tanzu/velero)
plugin_version=$(required "$src/plugin-aws" github.com/vmware-tanzu/velero-plugin-for-aws)
for pin in velero_version plugin_version go_version; do
    if [ -z "${!pin}" ]; then
        echo "lab/build-velero.sh: could not read $pin from $src/go.mod or $src/plugin-aws/go.mod" >&2
        exit 1
    fi
done
gobuild_begin "velero-$velero_version-aws-$plugin_version"

# Velero's release build (hack/build.sh) stamps the version; `velero version` and the
# server's startup log show it. The image registry stays upstream's default (velero/).
buildinfo=github.com/vmware-tanzu/velero/pkg/buildinfo
velero_ldflags="-s -w -X $buildinfo.Version=$velero_version -X $buildinfo.GitTreeState=clean"
gobuild_step "velero $velero_version" "$src" -ldflags "$velero_ldflags" \
    -o "$tmp/bin/velero" github.com/vmware-tanzu/velero/cmd/velero
gobuild_step "velero-plugin-for-aws $plugin_version" "$src/plugin-aws" -ldflags "-s -w" \
    -o "$tmp/plugins/velero-plugin-for-aws" github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws

gobuild_finish "velero=$velero_version" "velero_plugin_for_aws=$plugin_version"
