"""The VM cloud: every managed instance a moto_server runs gets a lab VM booted from the worker image.

LAB INFRASTRUCTURE, NOT PRODUCT CODE. Where the cloud watcher (cloud_watcher.py) stands in for
"the VM boots and joins by itself" with a kwok node, this stands in for the VM only: for each
instance tagged ``hybridcloud.io/managed-by=hybridcloud.migration`` in state pending/running, a
lab VM (lab_vm.py) boots from the lab's worker image at the instance's private IP address, with
the key of the instance's key pair in root's authorized_keys (as cloud-init puts it there). It
does not join anything: the product reaches it over SSH at that address and runs ``kubeadm
join`` there itself. When the instance is shutting-down or terminated, its VM is powered off and
its disk removed (its Node, if it joined, stays NotReady, as on a real cloud).

    with lab.vm_cloud("cloud", moto_server.endpoint_url, image=root, disks=tmp / "vms") as cloud:
        ... cloud.vms["i-..."].unit_log("kubelet.service") ...
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.hclab import LabError
from lab.hclab.cloud_watcher import DEFAULT_INTERVAL, DEFAULT_REGION, CloudWatcher, Instance
from lab.hclab.lab_vm import LabVM, remove_stale
from lab.hclab.state import require


class VmCloud(CloudWatcher):
    """Polls EC2 like the cloud watcher; boots and powers off lab VMs instead of adding kwok nodes.

    ``vms`` maps instance ids to their running VMs; each reaches ``cluster``'s API server at the
    same 127.0.0.1 address as the host.
    ``relay_ports``: more host ports the VMs reach at 127.0.0.1 (a storage server's, say).
    ``name_prefixes``: boot VMs only for instances whose Name starts with one of them (a test's own,
    in a moto that other tests share); empty for every managed instance.
    """

    def __init__(self, directory: Path, cluster: str, endpoint_url: str, *, image: Path, disks: Path,
                 authorized_keys: str = "", relay_ports: tuple[int, ...] = (), name_prefixes: tuple[str, ...] = (),
                 region: str = DEFAULT_REGION, interval: float = DEFAULT_INTERVAL, say: Callable[[str], None] = print) -> None:
        super().__init__(directory, cluster, endpoint_url, region=region, interval=interval, say=say)
        self.image = image
        self.disks = disks
        self.authorized_keys = authorized_keys
        self.relay_ports = relay_ports
        self.name_prefixes = name_prefixes
        self.vms: dict[str, LabVM] = {}
        self._addresses: dict[str, str] = {}
        self._keys: dict[str, str] = {}

    def run(self, stop: threading.Event) -> None:
        stale = remove_stale()
        if stale:
            self.say(f"vm-cloud: removed what killed lab VMs left: {', '.join(stale)}")
        super().run(stop)

    def instances(self) -> list[Instance]:
        found = super().instances()
        # The private address and key pair of each, which the base Instance does not keep.
        ids = [instance.instance_id for instance in found if instance.instance_id not in self._addresses]
        if ids:
            for page in self._ec2().get_paginator("describe_instances").paginate(InstanceIds=ids):
                for reservation in page.get("Reservations", []):
                    for data in reservation.get("Instances", []):
                        self._addresses[data["InstanceId"]] = str(data.get("PrivateIpAddress", ""))
                        self._keys[data["InstanceId"]] = str(data.get("KeyName", ""))
        return found

    def _public_key(self, key_name: str) -> str:
        """The key pair's public key (moto keeps imported ones), else the key given to the cloud."""
        if key_name:
            try:
                pairs = self._ec2().describe_key_pairs(KeyNames=[key_name], IncludePublicKey=True).get("KeyPairs", [])
            except Exception:  # pylint: disable=broad-exception-caught  # an unknown key pair: fall back
                pairs = []
            if pairs and pairs[0].get("PublicKey"):
                return str(pairs[0]["PublicKey"])
        return self.authorized_keys

    def _join(self, instance: Instance, nodes: list[str]) -> None:
        del nodes  # the VM joins only when the product joins it
        if instance.instance_id in self.vms or (self.name_prefixes and not instance.name.startswith(self.name_prefixes)):
            return
        address = self._addresses.get(instance.instance_id, "")
        if not address:
            self._note(f"noip {instance.instance_id}", f"vm-cloud: {instance.instance_id} has no private IP yet")
            return
        name = instance.name or instance.instance_id
        api_port = int(require(self.directory).cluster(self.cluster).server.rsplit(":", 1)[1])
        vm = LabVM(name, image=self.image, disk=self.disks / instance.instance_id, address=address,
                   authorized_keys=self._public_key(self._keys.get(instance.instance_id, "")), relay_ports=(api_port, *self.relay_ports))
        self.say(f"vm-cloud: {instance.instance_id} ({instance.state}) boots lab VM {name} at {address}")
        vm.start()
        self.vms[instance.instance_id] = vm

    def _leave(self, instance: Instance, nodes: list[str]) -> None:
        del nodes
        vm = self.vms.pop(instance.instance_id, None)
        if vm is not None:
            self.say(f"vm-cloud: {instance.instance_id} is {instance.state}: lab VM {vm.name} powers off")
            vm.remove()

    def vm_named(self, name: str) -> LabVM:
        for vm in self.vms.values():
            if vm.name == name:
                return vm
        raise LabError(f"no lab VM named {name} (VMs: {', '.join(v.name for v in self.vms.values()) or 'none'})")

    def remove_joined(self) -> list[str]:
        """Power off every VM (tests leave the machine as they found it); returns their names."""
        removed = []
        for instance_id in sorted(self.vms):
            vm = self.vms.pop(instance_id)
            vm.remove()
            removed.append(vm.name)
        return removed

    def describe(self) -> dict[str, Any]:
        return {instance_id: {"name": vm.name, "address": vm.address, "running": vm.running()} for instance_id, vm in self.vms.items()}
