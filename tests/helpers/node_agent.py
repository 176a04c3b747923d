"""The node backup agent as its systemd service runs it, for tests and the demo.

The role (roles/node_backup) renders a settings file from its template, installs a restic
password file and the agent bundle, and a timer runs ``/usr/bin/python3 -I <bundle> --config
<settings>``. systemd is not PID 1 here, so this module does those steps itself, from the
role's own template and agent, and runs the command directly.

The agent's identity toward the API server is its own: a client certificate from the
cluster's CA whose group may list pods and persistent volumes, nothing more.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from lab.hclab.pki import Authority, CertPair
from tests.helpers.ansible_run import REPO

AGENT = REPO / "roles/node_backup/files/hcm_node_backup.py"
TEMPLATE = REPO / "roles/node_backup/templates/node-backup.json.j2"


@dataclass
class Setup:
    """One agent installation: its settings file, password file, repository and bucket."""

    config: Path
    password_file: Path
    repository: str
    bucket: str
    settings: dict[str, Any]
    restic_env: dict[str, str]
    restic: str


def grant_identity(lab: Any, cluster: str, node_name: str, workdir: Path, suffix: str) -> tuple[CertPair, Callable[[], None]]:
    """A client certificate for the agent of ``node_name`` and the RBAC it needs; returns it and its removal."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    rbac = client.RbacAuthorizationV1Api(lab.api(cluster))
    cluster_dir = Path(lab.state.cluster(cluster).directory)
    authority = Authority(CertPair(cluster_dir / "pki/ca.crt", cluster_dir / "pki/ca.key"))
    group = f"hcm:node-backups:{suffix}"
    pair = authority.issue(workdir / "pki", "node-backup", f"hcm-node-backup:{node_name}", organizations=(group,), client=True)
    role = f"hcm-node-backup-{suffix}"
    rbac.create_cluster_role({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": role},
                              "rules": [{"apiGroups": [""], "resources": ["pods", "persistentvolumes"], "verbs": ["list"]}]})
    rbac.create_cluster_role_binding({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
    })

    def remove() -> None:
        for delete in (lambda: rbac.delete_cluster_role_binding(role), lambda: rbac.delete_cluster_role(role)):
            try:
                delete()
            except client.exceptions.ApiException as error:
                if error.status != 404:
                    raise
    return pair, remove


def install(*, cluster: str, node_name: str, api_server: str, api_ca: Path, api_client: CertPair, kubelet: Any, kubelet_client: CertPair,
            restic: str, server: Any, bucket: str, where: Path, password: str, endpoint_url: str | None = None, keep_last: int = 14,
            max_age: str = "14d", checkpoints: bool = True, kubelet_ca_file: str | None = None, kubelet_pki_dir: Path | None = None,
            retry_limit: str = "5m", lock_wait: str = "2m", extra_paths: tuple[str, ...] = ()) -> Setup:
    """The settings the role's template renders, plus the secret file it installs.

    The lock file moves into ``where``: the role's /run path would be shared by every agent here.
    The kubelet's CA is the stand-in's, named explicitly, unless ``kubelet_ca_file`` says otherwise
    ("" lets the agent choose by what ``kubelet_pki_dir`` holds).
    """
    where.mkdir(parents=True, exist_ok=True)
    endpoint_url = endpoint_url or server.endpoint_url
    repository = f"s3:{endpoint_url}/{bucket}/restic/{cluster}"
    variables = {
        "node_backup_cluster_name": cluster, "node_backup_node_name": node_name,
        "node_backup_s3_endpoint_url": endpoint_url, "node_backup_s3_region": server.region, "node_backup_s3_bucket": bucket,
        "node_backup_s3_access_key": server.access_key, "node_backup_s3_secret_key": server.secret_key,
        "node_backup_s3_ca_bundle": "", "node_backup_s3_validate_certs": True, "node_backup_s3_sse": "", "node_backup_s3_sse_kms_key_id": "",
        "node_backup_catalog_prefix": "catalog",
        "node_backup_restic_binary": restic, "node_backup_restic_repository": repository,
        "node_backup_config_dir": str(where),
        "node_backup_api_server": api_server, "node_backup_api_ca_file": str(api_ca),
        "node_backup_api_cert_file": str(api_client.cert), "node_backup_api_key_file": str(api_client.key),
        "node_backup_checkpoints_enabled": checkpoints, "node_backup_kubelet_url": kubelet.base_url,
        "node_backup_kubelet_ca_file": str(kubelet.ca_file) if kubelet_ca_file is None else kubelet_ca_file,
        "node_backup_kubelet_pki_dir": str(kubelet_pki_dir or where / "kubelet-pki"),
        "node_backup_restic_retry_limit": retry_limit, "node_backup_restic_lock_wait": lock_wait,
        "node_backup_kubelet_cert_file": str(kubelet_client.cert), "node_backup_kubelet_key_file": str(kubelet_client.key),
        "node_backup_checkpoint_timeout": 60, "node_backup_extra_paths": list(extra_paths), "node_backup_keep_last": keep_last,
        "node_backup_max_age": max_age,
    }
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(to_json=json.dumps, bool=bool, int=int)
    settings = json.loads(env.from_string(TEMPLATE.read_text()).render(**variables))
    settings["lock_file"] = str(where / "hcm-node-backup.lock")
    config = where / "hcm-node-backup.json"
    config.write_text(json.dumps(settings, indent=2))
    config.chmod(0o600)
    password_file = Path(settings["restic"]["password_file"])
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    restic_env = {"PATH": os.environ["PATH"], "HOME": str(where), "RESTIC_REPOSITORY": repository, "RESTIC_PASSWORD_FILE": str(password_file),
                  "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_DEFAULT_REGION": server.region}
    return Setup(config, password_file, repository, bucket, settings, restic_env, restic)


def run_agent(bundle: Path, setup: Setup) -> subprocess.CompletedProcess[str]:
    """The service's command: ``/usr/bin/python3 -I <bundle> --config <settings>``."""
    return subprocess.run(["/usr/bin/python3", "-I", str(bundle), "--config", str(setup.config)],
                          capture_output=True, text=True, timeout=600, check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
