#!/usr/bin/env bash
# Build containerd for the lab's worker VMs from Go modules, once per version: the daemon with
# its CRI plugin, the runc shim (containerd-shim-runc-v2) and ctr (lab/go/containerd,
# github.com/containerd/containerd/v2). runc, criu and the CNI plugins come from the worker
# root's Debian 13 packages.
#
# The pin lives in lab/go/containerd/go.mod. The result goes to
#   ${HCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridcloud-migration}/lab/<key>/
#     bin/containerd  bin/containerd-shim-runc-v2  bin/ctr
#     stamp
# where <key> names the containerd version plus a hash of lab/go/containerd's go.mod and go.sum,
# this script, lab/go-build-lib.sh and the Go version.
#
# Its own script because only the lab VM tests need it. Usage: bash lab/build-containerd.sh [--force]
set -euo pipefail
# shellcheck source=lab/go-build-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-build-lib.sh"
gobuild_init containerd "$@"

containerd_version=$(required "$src" github.com/containerd/containerd/v2)
if [ -z "$containerd_version" ]; then
    echo "lab/build-containerd.sh: could not read the containerd version from $src/go.mod" >&2
    exit 1
fi
gobuild_begin "containerd-$containerd_version"

# As containerd's Makefile stamps releases: `containerd --version` and the CRI's
# RuntimeName/RuntimeVersion (what `kubectl get node -o wide` shows) carry the version.
# Without cgo the btrfs snapshotter is left out (overlayfs is the default); no_devmapper
# drops a snapshotter the lab does not use.
version_pkg=github.com/containerd/containerd/v2/version
ldflags="-s -w -X $version_pkg.Version=$containerd_version -X $version_pkg.Revision=lab -X $version_pkg.Package=github.com/containerd/containerd/v2"
for tool in containerd containerd-shim-runc-v2 ctr; do
    gobuild_step "$tool $containerd_version" "$src" -tags "no_btrfs no_devmapper" -ldflags "$ldflags" \
        -o "$tmp/bin/$tool" "github.com/containerd/containerd/v2/cmd/$tool"
done

gobuild_finish "containerd=$containerd_version"
