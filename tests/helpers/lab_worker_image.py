"""The lab's worker image, built the product's way, for the tests that boot lab VMs.

playbooks/build_image.yml (target ``lab``) with the settings of lab/hclab/worker_image.py, into
a copy of the cached Debian root; lab/hclab/vm_image.py then adds the lab's pod network and images.

``HCM_TEST_WORKER_IMAGE=<dir>`` uses a root built before (by this function) instead: for working
on the VM tests without rebuilding it each time.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from lab.hclab import vm_image
from lab.hclab.worker_image import K8S_VERSION, seed_root, worker_node_vars
from tests.helpers.ansible_run import REPO, run_playbook


def build_lab_worker_image(workdir: Path) -> Path:
    prebuilt = os.environ.get("HCM_TEST_WORKER_IMAGE")
    if prebuilt:
        return Path(prebuilt)
    root = seed_root(workdir / "root")
    inventory = workdir / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"target_cloud": {"hosts": {"lab-image": {
        "ansible_connection": "local", "hcm_target_cloud": "lab", "hcm_target_region": "loopback",
        "hcm_target_cluster_name": "cloud", "hcm_kubernetes_version": K8S_VERSION, "worker_image_record": False,
        "worker_image_lab_root": str(root), "worker_image_worker_node_vars": worker_node_vars()}}}}}}))
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    built = run_playbook(REPO / "playbooks/build_image.yml", inventory=inventory, env={"HOME": str(home)})
    if built.returncode != 0:
        raise RuntimeError("building the lab's worker image failed:\n" + built.output[-4000:])
    return vm_image.finish(root, workdir / "lab-parts")
