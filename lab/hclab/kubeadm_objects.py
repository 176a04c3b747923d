"""The ConfigMaps and Roles ``kubeadm init`` leaves for ``kubeadm join``, made by the lab's ``up``.

A node that joins with a bootstrap token reads two ConfigMaps of kube-system: ``kubeadm-config``
(the ClusterConfiguration) and ``kubelet-config`` (the KubeletConfiguration every node's kubelet
starts from); kubeadm's Roles let the bootstrap token's group and the nodes read them. The lab's
control plane is not made by kubeadm, so ``up`` creates them as ``kubeadm init`` would, with the
kubelet settings these machines need: cgroup v1 (``failCgroupV1: false``) with the cgroupfs
driver (lab VMs have no systemd managing cgroups) and swap tolerated.
"""

from __future__ import annotations

from typing import Any

import yaml

NODE_GROUPS = ("system:bootstrappers:kubeadm:default-node-token", "system:nodes")


def cluster_configuration(version: str, endpoint: str, pod_cidr: str, service_cidr: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "clusterName": name,
        "kubernetesVersion": version,
        "controlPlaneEndpoint": endpoint,
        "certificatesDir": "/etc/kubernetes/pki",
        "networking": {"dnsDomain": "cluster.local", "podSubnet": pod_cidr, "serviceSubnet": service_cidr},
    }


def kubelet_configuration() -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "0s"},
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDomain": "cluster.local",
        "rotateCertificates": True,
        "staticPodPath": "/etc/kubernetes/manifests",
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        # The lab's disks are the host's: don't evict because the host's disk is fairly full.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
    }


def config_maps(version: str, endpoint: str, pod_cidr: str, service_cidr: str, name: str) -> list[dict[str, Any]]:
    cluster = cluster_configuration(version, endpoint, pod_cidr, service_cidr, name)
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
         "data": {"ClusterConfiguration": yaml.safe_dump(cluster)}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kubelet-config", "namespace": "kube-system"},
         "data": {"kubelet": yaml.safe_dump(kubelet_configuration())}},
    ]


def roles_and_bindings() -> list[dict[str, Any]]:
    """kubeadm's Roles (names as kubeadm makes them) letting joining nodes read the two ConfigMaps."""
    objects: list[dict[str, Any]] = []
    for role, config_map in (("kubeadm:nodes-kubeadm-config", "kubeadm-config"), ("kubeadm:kubelet-config", "kubelet-config")):
        meta = {"name": role, "namespace": "kube-system"}
        objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
                        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [config_map], "verbs": ["get"]}]})
        objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g} for g in NODE_GROUPS]})
    return objects
