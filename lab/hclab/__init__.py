"""hclab: start, inspect, break and stop the lab's two Kubernetes clusters, onprem and cloud.

Each cluster is the real thing, built from Go modules by ``make lab-build``: its own etcd,
kube-apiserver, kube-controller-manager and kube-scheduler, with worker nodes simulated by one
kwok process per node. Run it from the repository root::

    python -m lab.hclab up            # both clusters; prints kubeconfigs, endpoints, logs
    python -m lab.hclab status
    python -m lab.hclab fail-node onprem onprem-worker-2
    python -m lab.hclab down

Everything the lab writes (PKI, kubeconfigs, etcd data, logs, ``state.json``) lives under one
state directory, one sub-directory per cluster.
"""

from __future__ import annotations

__all__ = ["LabError"]


class LabError(RuntimeError):
    """Something the lab cannot do, with what to do about it in the message."""
