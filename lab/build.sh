#!/usr/bin/env bash
# Build the lab's binaries from Go modules, once per version: kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kubeadm and kubectl (symlinks to one
# multi-call `hyperkube`, lab/go/kube), etcd and etcdctl (lab/go/etcd), kwok (lab/go/kwok).
#
# The pins live in the go.mod files. The binaries go to
#   ${HCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridcloud-migration}/lab/<key>/bin/
# where <key> names the Kubernetes, kwok and etcd versions plus a hash of the go.mod, go.sum
# and .go files of lab/go/{kube,etcd,kwok}, this script and the Go version. A directory is
# complete only when its `stamp` exists: the build happens in a temporary directory that is
# renamed into place at the end, so an interrupted build never looks done. With the key
# unchanged nothing is rebuilt.
# Then .build/lab/bin in the checkout points at that bin directory.
#
# Go's own caches stay where Go puts them (module cache, build cache), so a rebuild after a
# pin change recompiles only what changed. Usage: bash lab/build.sh [--force]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$repo/lab/go
cache=${HCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridcloud-migration}/lab
link=$repo/.build/lab/bin
force=false
case ${1-} in
    --force) force=true ;;
    '') ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if ! [ -x "$go" ]; then
    echo "lab/build.sh: no Go toolchain (looked for 'go' on PATH and /usr/local/go/bin/go)." \
        "Fix: install Go >= 1.26 or set GO=/path/to/go." >&2
    exit 1
fi
# Builds must not depend on the caller's Go settings, nor on a go.work above the checkout.
export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0

# The version a module requires of another, from its go.mod (no network needed).
required() { # <module dir> <module path>
    (cd "$src/$1" && "$go" mod edit -json) |
        grep -A1 "\"Path\": \"$2\"" | sed -n 's/.*"Version": "\(.*\)".*/\1/p' | head -n1
}

k8s_version=$(required kube k8s.io/kubernetes)
etcd_version=$(required etcd go.etcd.io/etcd/server/v3)
kwok_version=$(required kwok sigs.k8s.io/kwok)
go_version=$(cd "$src/kube" && "$go" env GOVERSION)
for pin in k8s_version etcd_version kwok_version go_version; do
    if [ -z "${!pin}" ]; then
        echo "lab/build.sh: could not read $pin from $src/*/go.mod" >&2
        exit 1
    fi
done

inputs_hash=$(
    cd "$repo"
    {
        find lab/go/kube lab/go/etcd lab/go/kwok -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print |
            LC_ALL=C sort | xargs sha256sum
        sha256sum lab/build.sh
        echo "$go_version"
    } | sha256sum | cut -c1-12
)
key=k8s-$k8s_version-kwok-$kwok_version-etcd-$etcd_version-$inputs_hash
dest=$cache/$key

mkdir -p "$cache"
# One build at a time per cache: a second caller waits, then finds the stamp.
exec 9>"$cache/.lock"
flock 9

point_link() { # atomically (rename), for lab processes that are starting meanwhile
    mkdir -p "$(dirname "$link")"
    ln -sfn "$dest/bin" "$link.tmp.$$"
    mv -T "$link.tmp.$$" "$link"
}

if [ -f "$dest/stamp" ] && ! $force; then
    point_link
    echo "lab-build: up to date: $key (.build/lab/bin -> $dest/bin)"
    exit 0
fi

# Leftovers of interrupted builds (we hold the lock, so none is running).
rm -rf "$cache"/.tmp.*
tmp=$(mktemp -d "$cache/.tmp.$key.XXXXXX")
chmod 755 "$tmp" # mktemp makes it 0700
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/bin"

start=$(date +%s)
step() { # <label> <module dir> <go build args...>
    local label=$1 dir=$2 t0
    shift 2
    t0=$(date +%s)
    echo "lab-build: building $label ..."
    (cd "$src/$dir" && "$go" build -trimpath -buildvcs=false "$@")
    echo "lab-build: $label built in $(($(date +%s) - t0))s"
}

# Kubernetes: stamp the version as the release build does (hack/lib/version.sh), or kubeadm
# and kubelet report v0.0.0-master and their version checks fail. The build date is the
# release's own date from the module proxy, which keeps the binary reproducible.
k8s_minor=${k8s_version#v1.}
k8s_minor=${k8s_minor%%.*}
k8s_date=$(cd "$src/kube" && "$go" list -m -json k8s.io/kubernetes |
    sed -n 's/.*"Time": "\(.*\)".*/\1/p')
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1"
    k8s_ldflags+=" -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
    k8s_ldflags+=" -X $pkg.gitCommit= -X $pkg.buildDate=${k8s_date:-1970-01-01T00:00:00Z}"
done
step "Kubernetes $k8s_version (hyperkube)" kube -ldflags "$k8s_ldflags" -o "$tmp/bin/hyperkube" .
for component in kube-apiserver kube-controller-manager kube-scheduler kubelet kubeadm kubectl; do
    ln -s hyperkube "$tmp/bin/$component"
done

step "etcd $etcd_version" etcd -ldflags "-s -w" -o "$tmp/bin/etcd" .
step "etcdctl $etcd_version" etcd -ldflags "-s -w" -o "$tmp/bin/etcdctl" go.etcd.io/etcd/etcdctl/v3
step "kwok $kwok_version" kwok -ldflags "-s -w" -o "$tmp/bin/kwok" sigs.k8s.io/kwok/cmd/kwok

seconds=$(($(date +%s) - start))
cat >"$tmp/stamp" <<EOF
key=$key
kubernetes=$k8s_version
kwok=$kwok_version
etcd=$etcd_version
go=$go_version
built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_seconds=$seconds
EOF
rm -rf "$dest" # an unstamped directory, or --force
mv -T "$tmp" "$dest"
trap - EXIT
point_link
echo "lab-build: built $key in ${seconds}s: $(du -sh "$dest/bin" | cut -f1) in $dest/bin"
echo "lab-build: $(cd "$dest/bin" && echo *)"
echo "lab-build: .build/lab/bin -> $dest/bin"
others=$(find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'k8s-*' ! -name "$key" | wc -l)
if [ "$others" -gt 0 ]; then
    echo "lab-build: $others older build(s) stay in $cache (kept for other checkouts; rm -rf them when unused)"
fi
