#!/bin/sh
# Enter a Debian root and exec a command in it, as PID 1 of a fresh pid namespace.
# Started by lab/hclab/debian_root.py as:
#   unshare --mount --pid --fork --kill-child /bin/sh enter_root.sh ROOT [--bind HOST INNER]... -- ARGV...
# Everything mounted here lives only in this mount namespace and disappears with it.
set -eu

root=$1
shift

# unshare copies the host's mount table; make every copy private first, so no mount below
# (and no unmount) propagates back to the host's namespace, whatever the host's flags are.
mount --make-rprivate /

# pivot_root needs the new root to be a mount point: bind the directory onto itself.
mount --bind "$root" "$root"

# A fresh proc shows only this pid namespace (criu reads /proc and writes ns_last_pid).
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
# /sys with its submounts (cgroup hierarchies), which criu inspects; a bare sysfs has none.
mount --rbind /sys "$root/sys"

# A private /dev with only the usual nodes, never the host's devices (shared with the lab's VMs).
sh "$(dirname "$0")/../../lab/hclab/vm/dev.sh" "$root"

# Scratch space per call, so commands never write into the cached tree on disk.
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$root/tmp"
mount -t tmpfs -o mode=755,nosuid,nodev run "$root/run"

# Extra bind mounts of host paths (the Python side rejects targets crossing symlinks,
# because these paths are still resolved against the host's root here).
while [ "$#" -gt 0 ] && [ "$1" = --bind ]; do
    host=$2
    target=$root$3
    shift 3
    if [ -d "$host" ]; then
        mkdir -p "$target"
    else
        mkdir -p "$(dirname "$target")"
        [ -e "$target" ] || : >"$target"
    fi
    mount --bind "$host" "$target"
done
[ "${1-}" = -- ] && shift

cd "$root"
# pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves no path
# to the host tree in this namespace (umount here is the root's own, from package "mount").
if pivot_root . . 2>/dev/null; then
    umount -l .
    cd /
    exec "$@"
fi
# pivot_root fails when our root is not a mount point of its own (e.g. when the caller is
# itself chrooted); chroot still isolates paths, but the host's mounts stay in the table.
echo "enter_root.sh: pivot_root failed, falling back to chroot" >&2
exec chroot "$root" /bin/sh -c 'cd / && exec "$@"' sh "$@"
