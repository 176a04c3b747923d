#!/bin/sh
# Boot a lab VM: the worker image's root, in the namespaces lab/hclab/lab_vm.py made for it.
# Started by lab_vm.py, already inside the VM's network namespace and cgroups, as:
#   unshare --mount --pid --uts --ipc --cgroup --fork --kill-child /bin/sh boot.sh IMAGE DISK HOSTNAME INIT CONTROLLERS
# IMAGE is the worker image's root (read-only here), DISK the VM's own directory: its writes go to
# DISK/upper (an overlay over IMAGE, like a VM's disk made from an image), the container stores'
# (containerd's, buildah's) and the kubelet's to plain directories (overlayfs can't be an
# overlay's upper layer). Then the
# root is pivoted to, and INIT (lab/hclab/vm/init.py, copied into the disk) runs as PID 1.
# CONTROLLERS: the host's cgroup v1 controllers, space-separated (the VM's cgroup in each).
set -eu

image=$1
disk=$2
name=$3
init=$4
controllers=$5
root=$disk/root

mount --make-rprivate /
mkdir -p "$root" "$disk/upper" "$disk/work" "$disk/containerd" "$disk/containers" "$disk/kubelet" "$disk/pods"
mount -t overlay overlay -o "lowerdir=$image,upperdir=$disk/upper,workdir=$disk/work" "$root"
for dir in var/lib/containerd var/lib/containers var/lib/kubelet var/log/pods; do
    mkdir -p "$root/$dir"
done
mount --bind "$disk/containerd" "$root/var/lib/containerd"
mount --bind "$disk/containers" "$root/var/lib/containers"
mount --bind "$disk/kubelet" "$root/var/lib/kubelet"
mount --bind "$disk/pods" "$root/var/log/pods"

mount -t proc proc "$root/proc"
# A sysfs mounted in the VM's network namespace lists the VM's own interfaces.
mount -t sysfs sysfs "$root/sys"
# The cgroup hierarchies, mounted inside the VM's cgroup namespace: each shows the VM's own cgroup
# as its root (as on a VM), so the kubelet's /kubepods of two VMs never meet.
mount -t tmpfs -o mode=755 cgroup "$root/sys/fs/cgroup"
for controller in $controllers; do
    mkdir -p "$root/sys/fs/cgroup/$controller"
    mount -t cgroup -o "$controller" cgroup "$root/sys/fs/cgroup/$controller"
done
mkdir -p "$root/sys/fs/cgroup/systemd"
mount -t cgroup -o none,name=systemd cgroup "$root/sys/fs/cgroup/systemd"

# A private /dev; kmsg (the kubelet's OOM watcher reads it) and console besides the usual nodes.
sh "$(dirname "$0")/dev.sh" "$root" kmsg 1 11 console 5 1
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$root/tmp"
mount -t tmpfs -o mode=755,nosuid,nodev run "$root/run"

hostname "$name"
echo "$name" >"$root/etc/hostname"
# As cloud-init's manage_etc_hosts: the VM resolves its own name.
grep -q " $name\$" "$root/etc/hosts" 2>/dev/null || echo "127.0.1.1 $name" >>"$root/etc/hosts"
cp "$init" "$root/run/hclab-init.py"
# The VM's systemctl and journalctl answer for that init (vm/systemctl.py), on the VM's disk only.
install -D -m 0644 "$(dirname "$init")/systemctl.py" "$root/usr/local/lib/hclab/systemctl.py"
for tool in systemctl journalctl; do
    printf '#!/bin/sh\nexec /usr/bin/python3 /usr/local/lib/hclab/systemctl.py %s "$@"\n' "$tool" >"$root/usr/local/sbin/$tool"
    chmod 0755 "$root/usr/local/sbin/$tool"
done

cd "$root"
pivot_root . .
umount -l .
cd /
# The kubelet wants its directory on a shared mount (mount propagation for volumes).
mount --make-rshared /
exec /usr/bin/python3 /run/hclab-init.py
