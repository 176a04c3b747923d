"""hclab: start, inspect, break and stop the lab's two Kubernetes clusters, onprem and cloud.

Each cluster is the real thing, built from Go modules by ``make lab-build``: its own etcd,
kube-apiserver, kube-controller-manager and kube-scheduler, with worker nodes simulated by one
kwok process per node. Run it from the repository root::

    python -m lab.hclab up            # both clusters; prints kubeconfigs, endpoints, logs
    python -m lab.hclab status
    python -m lab.hclab fail-node onprem onprem-worker-2
    python -m lab.hclab add-node cloud cloud-worker-7 --label pool=extra --wait
    python -m lab.hclab remove-node cloud cloud-worker-7
    python -m lab.hclab watch-cloud --cluster cloud --ec2-endpoint http://127.0.0.1:5000
    python -m lab.hclab down

``add-node`` makes one more node in a running cluster exactly as ``up`` makes its nodes;
``watch-cloud`` (``lab.hclab.cloud_watcher``) makes the tagged EC2 instances of a moto_server
join the cloud cluster as nodes, standing in for VMs that boot from the worker image and join.

Everything the lab writes (PKI, kubeconfigs, etcd data, logs, ``state.json``) lives under one
state directory, one sub-directory per cluster.
"""

from __future__ import annotations

__all__ = ["LabError"]


class LabError(RuntimeError):
    """Something the lab cannot do, with what to do about it in the message."""
