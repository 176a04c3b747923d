#!/bin/sh
# A private /dev for a root about to be entered (run in its new mount namespace):
#   sh dev.sh ROOT [NAME MAJOR MINOR]...
# the usual character devices, /dev/net/tun (criu check probes it), a private devpts
# (newinstance: ptys opened inside are not the host's), shm and the fd links; never the host's
# devices. More character devices may be named after ROOT (a lab VM adds kmsg and console).
# Used by lab/hclab/vm/boot.sh (lab VMs) and lab/hclab/enter_root.sh (the Debian root).
set -eu
root=$1
shift

mount -t tmpfs -o mode=755,nosuid,size=1m dev "$root/dev"
set -- null 1 3 zero 1 5 full 1 7 random 1 8 urandom 1 9 tty 5 0 "$@"
while [ "$#" -ge 3 ]; do
    mknod -m 666 "$root/dev/$1" c "$2" "$3"
    shift 3
done
mkdir -p "$root/dev/net" "$root/dev/pts" "$root/dev/shm"
mknod -m 666 "$root/dev/net/tun" c 10 200
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
