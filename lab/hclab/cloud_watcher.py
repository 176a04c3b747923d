"""The cloud watcher: VMs started in the (moto) cloud join the lab's ``cloud`` cluster by themselves.

LAB INFRASTRUCTURE, NOT PRODUCT CODE. In real life a worker VM boots from the worker image and
its cloud-init runs ``kubeadm join``: the kubelet registers the Node and keeps it Ready, and
when the VM is terminated the node goes away. Nothing here can boot a VM, so this watcher
stands in for "the VM boots from the worker image and joins": it polls the EC2 API of a
``moto_server`` (``DescribeInstances``) and, for every instance in state ``pending`` or
``running`` tagged ``hybridcloud.io/managed-by=hybridcloud.migration``, adds a kwok node to
the cluster exactly as ``python -m lab.hclab add-node`` does, named after the instance's
``Name`` tag and labelled like a cloud node:

    node.kubernetes.io/instance-type   the instance type (t3.medium, ...)
    topology.kubernetes.io/region      the region polled
    topology.kubernetes.io/zone        the instance's availability zone
    hclab.io/instance-id               the instance id (i-...)

When such an instance is ``shutting-down`` or ``terminated``, the node it made is removed
(``remove-node``). Instances without the tag are ignored, as are tagged instances without a
``Name`` tag or whose name is a node that is not theirs (each is reported once). A node the
watcher made stays while its instance runs, even after fail-node; one deleted by hand while its
instance runs joins again, as a rebooted kubelet would register again.

The product never talks to this: it launches instances through the EC2 API and then sees a
node join, as it would on a real cloud. Run it from the command line until SIGTERM/SIGINT::

    python -m lab.hclab watch-cloud --cluster cloud --ec2-endpoint http://127.0.0.1:5000

or in a thread of a test: ``CloudWatcher(...).run(stop_event)`` (``tests/helpers/fixtures_lab.py``
wraps it as ``with lab.cloud_watcher("cloud", moto_server.endpoint_url): ...``). Any credentials
do for moto; the watcher sends dummy ones, never the caller's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.hclab import LabError, commands
from lab.hclab.cluster import api_client, check_node_name
from lab.hclab.state import require

MANAGED_BY_TAG = "hybridcloud.io/managed-by"
MANAGED_BY_VALUE = "hybridcloud.migration"
INSTANCE_ID_LABEL = "hclab.io/instance-id"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
JOINING_STATES = frozenset({"pending", "running"})
GONE_STATES = frozenset({"shutting-down", "terminated"})
DEFAULT_REGION = "us-east-1"
DEFAULT_INTERVAL = 1.0
MAX_ERRORS_KEPT = 50


@dataclass(frozen=True)
class Instance:
    """What the watcher needs of one EC2 instance."""

    instance_id: str
    name: str
    state: str
    instance_type: str
    zone: str

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Instance:
        tags = {tag.get("Key", ""): tag.get("Value", "") for tag in data.get("Tags") or []}
        return cls(
            instance_id=str(data.get("InstanceId", "")),
            name=tags.get("Name", ""),
            state=str((data.get("State") or {}).get("Name", "")),
            instance_type=str(data.get("InstanceType", "")),
            zone=str((data.get("Placement") or {}).get("AvailabilityZone", "")),
        )


class CloudWatcher:
    """Polls EC2 and adds/removes the lab nodes of managed instances (see the module docstring).

    ``joined`` maps the id of each instance whose node this watcher made (or found made for it)
    to the node's name. ``polls`` counts finished polls, ``errors`` keeps the last errors (a
    failed poll is reported and retried at the next interval, never fatal).
    """

    def __init__(
        self,
        directory: Path,
        cluster: str,
        endpoint_url: str,
        *,
        region: str = DEFAULT_REGION,
        interval: float = DEFAULT_INTERVAL,
        say: Callable[[str], None] = print,
    ) -> None:
        self.directory = directory
        self.cluster = cluster
        self.endpoint_url = endpoint_url
        self.region = region
        self.interval = interval
        self.say = say
        self.joined: dict[str, str] = {}
        self.polls = 0
        self.errors: list[str] = []
        self._settled: set[str] = set()  # gone instances already dealt with
        self._noted: set[str] = set()  # things reported once
        self._client: Any = None

    # -- the cloud -----------------------------------------------------------------------
    def _ec2(self) -> Any:
        if self._client is None:
            import boto3  # pylint: disable=import-outside-toplevel
            from botocore.config import Config  # pylint: disable=import-outside-toplevel

            self._client = boto3.client(
                "ec2",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id="hclab",
                aws_secret_access_key="hclab",
                config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"}),
            )
        return self._client

    def instances(self) -> list[Instance]:
        """Every instance tagged as managed by the migration, in any state."""
        found = []
        pages = self._ec2().get_paginator("describe_instances").paginate(Filters=[{"Name": f"tag:{MANAGED_BY_TAG}", "Values": [MANAGED_BY_VALUE]}])
        for page in pages:
            for reservation in page.get("Reservations", []):
                for data in reservation.get("Instances", []):
                    tags = {tag.get("Key"): tag.get("Value") for tag in data.get("Tags") or []}
                    if tags.get(MANAGED_BY_TAG) == MANAGED_BY_VALUE:
                        found.append(Instance.from_api(data))
        return found

    def labels(self, instance: Instance) -> dict[str, str]:
        labels = {INSTANCE_ID_LABEL: instance.instance_id, INSTANCE_TYPE_LABEL: instance.instance_type, REGION_LABEL: self.region}
        if instance.zone:
            labels[ZONE_LABEL] = instance.zone
        return {key: value for key, value in labels.items() if value}

    # -- the cluster -----------------------------------------------------------------------
    def _node_instance_id(self, node: str) -> str:
        """The instance id label of Node ``node`` ("" if it has none or is gone)."""
        from kubernetes import client  # pylint: disable=import-outside-toplevel
        from kubernetes.client.exceptions import ApiException  # pylint: disable=import-outside-toplevel

        core = client.CoreV1Api(api_client(require(self.directory).cluster(self.cluster).kubeconfig))
        try:
            found = core.read_node(node, _request_timeout=10)
        except ApiException as error:
            if error.status == 404:
                return ""
            raise
        return str((found.metadata.labels or {}).get(INSTANCE_ID_LABEL, ""))

    def _note(self, key: str, message: str) -> None:
        if key not in self._noted:
            self._noted.add(key)
            self.say(message)

    def _join(self, instance: Instance, nodes: list[str]) -> None:
        if not instance.name:
            self._note(f"unnamed {instance.instance_id}", f"watch-cloud: {instance.instance_id} has no Name tag; no node joins for it")
            return
        try:
            check_node_name(instance.name)
        except LabError as error:
            self._note(f"badname {instance.instance_id}", f"watch-cloud: {instance.instance_id}: {error}; no node joins for it")
            return
        if instance.name in nodes:
            if self.joined.get(instance.instance_id) == instance.name:
                return
            if self._node_instance_id(instance.name) == instance.instance_id:  # made by an earlier watcher
                self.joined[instance.instance_id] = instance.name
                return
            self._note(
                f"taken {instance.instance_id}",
                f"watch-cloud: {instance.instance_id} is named {instance.name}, but node {instance.name} is not its own; ignored",
            )
            return
        self.say(f"watch-cloud: {instance.instance_id} ({instance.state}, {instance.instance_type}) boots: node {instance.name} joins {self.cluster}")
        commands.add_node(self.directory, self.cluster, instance.name, self.labels(instance), False, self.say)
        self.joined[instance.instance_id] = instance.name
        self._settled.discard(instance.instance_id)

    def _leave(self, instance: Instance, nodes: list[str]) -> None:
        if instance.instance_id in self._settled:
            return
        node = self.joined.get(instance.instance_id, "")
        if not node and instance.name in nodes and self._node_instance_id(instance.name) == instance.instance_id:
            node = instance.name  # made by an earlier watcher
        if node:
            self.say(f"watch-cloud: {instance.instance_id} is {instance.state}: node {node} leaves {self.cluster}")
            commands.remove_node(self.directory, self.cluster, node, self.say)
        self.joined.pop(instance.instance_id, None)
        self._settled.add(instance.instance_id)

    def poll(self) -> None:
        """One round: join the nodes of new instances, remove those of terminated ones.

        An instance that cannot be dealt with does not hold up the others; what went wrong is
        raised at the end of the round.
        """
        failed: list[str] = []
        for instance in self.instances():
            try:
                nodes = list(require(self.directory).cluster(self.cluster).nodes)
                if instance.state in JOINING_STATES:
                    self._join(instance, nodes)
                elif instance.state in GONE_STATES:
                    self._leave(instance, nodes)
            except Exception as error:  # pylint: disable=broad-exception-caught  # raised after the other instances
                failed.append(f"{instance.instance_id} ({instance.name or 'no name'}): {type(error).__name__}: {error}")
        if failed:
            raise LabError("; ".join(failed))

    def run(self, stop: threading.Event) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set; a failed poll is reported and retried."""
        self.say(f"watch-cloud: watching EC2 at {self.endpoint_url} ({self.region}) for {MANAGED_BY_TAG}={MANAGED_BY_VALUE}; cluster {self.cluster}")
        while not stop.is_set():
            try:
                self.poll()
            except Exception as error:  # pylint: disable=broad-exception-caught  # a watcher keeps watching
                message = str(error) if isinstance(error, LabError) else f"{type(error).__name__}: {error}"
                self.errors = [*self.errors, message][-MAX_ERRORS_KEPT:]
                self.say(f"watch-cloud: poll failed (retrying in {self.interval:g}s): {message}")
            self.polls += 1
            stop.wait(self.interval)
        self.say(f"watch-cloud: stopped; the nodes of running instances stay ({', '.join(sorted(self.joined.values())) or 'none'})")

    def remove_joined(self) -> list[str]:
        """Remove every node this watcher made that is still there (tests leave the lab as they found it)."""
        removed = []
        for instance_id, node in sorted(self.joined.items()):
            if commands.remove_node(self.directory, self.cluster, node, self.say):
                removed.append(node)
            self.joined.pop(instance_id, None)
        return removed
