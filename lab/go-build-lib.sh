# shellcheck shell=bash
# Shared by lab/build-velero.sh and lab/build-packer.sh (sourced, not run): build Go tools from
# modules of ours under lab/go/<name>, once per key, into the lab cache. As in lab/build.sh (same
# cache, same lock, so two heavy Go builds never run at once): a directory is complete only when
# its `stamp` exists, the build happens in a temporary directory renamed into place at the end,
# and with the key unchanged nothing is rebuilt. Then .build/lab/<name> in the checkout points at it.
#
#   gobuild_init <name> "$@"          options (--force), the Go toolchain, $repo $src $cache $link
#   required <module dir> <module>    the version a go.mod requires (no network needed)
#   gobuild_begin <key prefix>        the key (prefix + inputs hash), the lock; exits when up to date
#   gobuild_step <label> <dir> <go build args...>
#   gobuild_finish <stamp lines>      stamp, rename into place, point the link

gobuild_init() { # <name> [--force]
    gobuild_name=$1
    shift
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    src=$repo/lab/go/$gobuild_name
    cache=${HCM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridcloud-migration}/lab
    link=$repo/.build/lab/$gobuild_name
    force=false
    case ${1-} in
        --force) force=true ;;
        '') ;;
        *) echo "usage: lab/build-$gobuild_name.sh [--force]" >&2; exit 2 ;;
    esac
    go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
    if ! [ -x "$go" ]; then
        echo "lab/build-$gobuild_name.sh: no Go toolchain (looked for 'go' on PATH and /usr/local/go/bin/go)." \
            "Fix: install Go >= 1.26 or set GO=/path/to/go." >&2
        exit 1
    fi
    # Builds must not depend on the caller's Go settings, nor on a go.work above the checkout.
    export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0
    go_version=$(cd "$src" && "$go" env GOVERSION)
}

required() { # <module dir> <module path>
    (cd "$1" && "$go" mod edit -json) |
        grep -A1 "\"Path\": \"$2\"" | sed -n 's/.*"Version": "\(.*\)".*/\1/p' | head -n1
}

gobuild_point_link() {
    mkdir -p "$(dirname "$link")"
    ln -sfn "$dest" "$link.tmp.$$"
    mv -T "$link.tmp.$$" "$link"
}

gobuild_begin() { # <key prefix>
    local inputs_hash
    inputs_hash=$(
        cd "$repo" || exit 1
        {
            find "lab/go/$gobuild_name" -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print |
                LC_ALL=C sort | xargs sha256sum
            sha256sum "lab/build-$gobuild_name.sh" lab/go-build-lib.sh
            echo "$go_version"
        } | sha256sum | cut -c1-12
    )
    key=$1-$inputs_hash
    dest=$cache/$key
    mkdir -p "$cache"
    # The lock lab/build.sh takes: one heavy Go build at a time per cache.
    exec 9>"$cache/.lock"
    flock 9
    if [ -f "$dest/stamp" ] && ! $force; then
        gobuild_point_link
        echo "lab-build-$gobuild_name: up to date: $key (.build/lab/$gobuild_name -> $dest)"
        exit 0
    fi
    # Leftovers of interrupted builds (we hold the lock, so none is running).
    rm -rf "$cache"/.tmp.*
    tmp=$(mktemp -d "$cache/.tmp.$key.XXXXXX")
    chmod 755 "$tmp" # mktemp makes it 0700
    trap 'rm -rf "$tmp"' EXIT
    mkdir "$tmp/bin" "$tmp/plugins"
    gobuild_start=$(date +%s)
}

gobuild_step() { # <label> <module dir> <go build args...>
    local label=$1 dir=$2 t0
    shift 2
    t0=$(date +%s)
    echo "lab-build-$gobuild_name: building $label ..."
    (cd "$dir" && "$go" build -trimpath -buildvcs=false "$@")
    echo "lab-build-$gobuild_name: $label built in $(($(date +%s) - t0))s"
}

gobuild_finish() { # <stamp lines: name=version ...>
    local seconds=$(($(date +%s) - gobuild_start))
    {
        echo "key=$key"
        printf '%s\n' "$@"
        echo "go=$go_version"
        echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "build_seconds=$seconds"
    } >"$tmp/stamp"
    rm -rf "$dest" # an unstamped directory, or --force
    mv -T "$tmp" "$dest"
    trap - EXIT
    gobuild_point_link
    echo "lab-build-$gobuild_name: built $key in ${seconds}s: $(du -sh "$dest" | cut -f1) in $dest"
    echo "lab-build-$gobuild_name: .build/lab/$gobuild_name -> $dest"
}
