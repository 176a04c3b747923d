"""bootstrap_token against the lab's real API servers and bootstrapsigner controllers.

The token goes through a playbook (register, then a file the test reads) because the task's
displayed result is hidden: that is how a user gets it too. What the module claims is checked
independently: the Secret through the API, the CA hash against the lab's own CA
(``lab.ca_cert_hash``), the cluster-info signature with tests/helpers/jws.py, and the token by
authenticating with it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.hclab.client import Lab
from lab.hclab.paths import bin_dir
from tests.helpers.ansible_run import ModuleResult, Run, run_module, run_playbook
from tests.helpers.jws import jws_signature_valid
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.integration

TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
DEFAULT_GROUP = "system:bootstrappers:kubeadm:default-node-token"
CENSORED = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"


def core(lab: Lab, cluster: str) -> Any:
    from kubernetes import client

    return client.CoreV1Api(lab.api(cluster))


def token_secrets(lab: Lab, cluster: str) -> dict[str, dict[str, str]]:
    """Every bootstrap token Secret of the cluster: name -> decoded data (and labels under '_labels')."""
    listed = core(lab, cluster).list_namespaced_secret("kube-system", field_selector="type=bootstrap.kubernetes.io/token")
    found = {}
    for item in listed.items:
        data = {key: base64.b64decode(value).decode() for key, value in (item.data or {}).items()}
        found[item.metadata.name] = dict(data, _labels=item.metadata.labels or {}, _type=item.type)
    return found


def cluster_info(lab: Lab, cluster: str) -> dict[str, str]:
    return core(lab, cluster).read_namespaced_config_map("cluster-info", "kube-public").data


def make_token(lab: Lab, cluster: str, tmp_path: Path, check: bool = False, verbosity: int = 3, **args: Any) -> tuple[dict[str, Any], Run]:
    """Run the module in a play, register its result and hand it to the test through a 0600 file."""
    out = tmp_path / f"result-{uuid.uuid4().hex[:8]}.json"
    playbook = tmp_path / f"token-{uuid.uuid4().hex[:8]}.yml"
    task_args = {"kubeconfig": str(lab.kubeconfig(cluster)), **args}
    play = [
        {
            "name": "A join token",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {"name": "Make the token", "hybridcloud.migration.bootstrap_token": task_args, "register": "join"},
                {
                    "name": "Keep the registered result for the test",
                    "ansible.builtin.copy": {"content": "{{ join | to_json }}", "dest": str(out), "mode": "0600"},
                    "check_mode": False,
                },
            ],
        }
    ]
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    run = run_playbook(playbook, check=check, env={"ANSIBLE_VERBOSITY": str(verbosity)})
    assert run.returncode == 0, run.output[-5000:]
    return json.loads(out.read_text()), run


def _json_objects(text: str) -> list[dict[str, Any]]:
    """`kubeadm token list -o json` prints one JSON object per token, one after the other."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        obj, index = decoder.raw_decode(text, index)
        objects.append(obj)
    return objects


def refused(result: ModuleResult, *needles: str) -> None:
    assert result.get("failed") is True, result.run.output[-3000:]
    for needle in needles:
        assert needle in result["msg"], result["msg"]


def test_token_is_made_as_kubeadm_makes_it_signed_verified_reused_then_deleted(lab: Lab, tmp_path: Path) -> None:
    run_id = f"mig-{uuid.uuid4().hex[:8]}"
    before = token_secrets(lab, "cloud")

    join, run = make_token(lab, "cloud", tmp_path, run_id=run_id, ttl="30m")

    # What the playbook registered: the token, the CA pin and where to join.
    match = TOKEN_RE.match(join["token"])
    assert match, "token is not <6>.<16> of [a-z0-9]"
    token_id, token_secret = match.groups()
    assert join["changed"] is True and join["reused"] is False
    assert join["token_id"] == token_id and join["secret_name"] == f"bootstrap-token-{token_id}"
    assert join["ca_cert_hash"] == lab.ca_cert_hash("cloud")
    assert join["ca_cert_hashes"] == [lab.ca_cert_hash("cloud")]
    assert join["server"] == lab.server("cloud") and join["api_server_endpoint"] == lab.server("cloud").removeprefix("https://")
    assert join["signed"] is True and join["discovery_verified"] is True
    assert 29 * 60 <= join["expires_in"] <= 30 * 60

    # The Secret holds exactly kubeadm's fields, plus the run label.
    secrets_now = token_secrets(lab, "cloud")
    assert set(secrets_now) - set(before) == {f"bootstrap-token-{token_id}"}
    secret = secrets_now[f"bootstrap-token-{token_id}"]
    assert secret["_type"] == "bootstrap.kubernetes.io/token"
    assert secret["_labels"]["migration.hybridcloud.io/run-id"] == run_id
    assert {key: value for key, value in secret.items() if not key.startswith("_")} == {
        "token-id": token_id,
        "token-secret": token_secret,
        "expiration": join["expiration"],
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": DEFAULT_GROUP,
        "description": f"Join token made by hybridcloud.migration.bootstrap_token for run {run_id}",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", secret["expiration"])
    # kubeadm itself reads it back as one of its tokens.
    listed = subprocess.run(
        [str(bin_dir() / "kubeadm"), "token", "list", "--kubeconfig", str(lab.kubeconfig("cloud")), "-o", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    [seen] = [doc for doc in _json_objects(listed) if doc["token"] == join["token"]]
    assert seen["usages"] == ["authentication", "signing"] and seen["groups"] == [DEFAULT_GROUP]
    assert seen["expires"] == join["expiration"] and run_id in seen["description"]

    # cluster-info is signed for it, and the signature checks out independently of the module.
    data = cluster_info(lab, "cloud")
    assert jws_signature_valid(data[f"jws-kubeconfig-{token_id}"], data["kubeconfig"], token_id, token_secret)
    published = yaml.safe_load(data["kubeconfig"])["clusters"][0]["cluster"]
    assert base64.b64decode(published["certificate-authority-data"]) == lab.ca_cert("cloud").read_bytes()

    # The token authenticates as a joining node's does.
    from kubernetes import client

    config = client.Configuration()
    config.host = lab.server("cloud")
    config.ssl_ca_cert = str(lab.ca_cert("cloud"))
    config.api_key = {"authorization": f"Bearer {join['token']}"}
    review = client.AuthenticationV1Api(client.ApiClient(config)).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    assert review.status.user_info.username == f"system:bootstrap:{token_id}"
    assert DEFAULT_GROUP in review.status.user_info.groups

    # Not a trace of the secret in -vvv output; the task's display is hidden, the copy's content masked.
    assert token_secret not in run.output
    [made, kept] = run.task_results()
    assert made["censored"] == CENSORED and made["changed"] is True and "ca_cert_hash" not in made
    assert kept["changed"] is True

    # A second run of the same migration reuses the token: nothing changes, nothing new in kube-system.
    again, run_again = make_token(lab, "cloud", tmp_path, run_id=run_id, ttl="30m")
    assert again["changed"] is False and again["reused"] is True
    assert again["token"] == join["token"] and again["expiration"] == join["expiration"]
    assert again["signed"] is True and again["discovery_verified"] is True
    assert token_secret not in run_again.output
    assert set(token_secrets(lab, "cloud")) == set(secrets_now)

    # Check mode says it would reuse it, without the token.
    checked = run_module("bootstrap_token", {"kubeconfig": str(lab.kubeconfig("cloud")), "run_id": run_id, "ttl": "30m"}, check=True, verbosity=3)
    assert checked["changed"] is False and checked["token_id"] == token_id and "token" not in checked
    assert "the token is not returned in check mode" in checked["msg"]
    assert token_secret not in checked.run.output

    # state=absent with the run id deletes it, and the bootstrapsigner withdraws the signature.
    removed = run_module("bootstrap_token", {"kubeconfig": str(lab.kubeconfig("cloud")), "state": "absent", "run_id": run_id})
    assert removed["changed"] is True and removed["deleted"] == [token_id]
    assert f"bootstrap-token-{token_id}" not in token_secrets(lab, "cloud")
    wait_until(f"jws-kubeconfig-{token_id} removed from cluster-info", lambda: f"jws-kubeconfig-{token_id}" not in cluster_info(lab, "cloud"), 60)
    gone = run_module("bootstrap_token", {"kubeconfig": str(lab.kubeconfig("cloud")), "state": "absent", "run_id": run_id})
    assert gone["changed"] is False and gone["deleted"] == []


def test_a_token_with_too_little_time_left_or_other_groups_is_not_reused(lab: Lab, tmp_path: Path) -> None:
    run_id = f"mig-{uuid.uuid4().hex[:8]}"
    first, _run = make_token(lab, "cloud", tmp_path, run_id=run_id, ttl="10m", verbosity=0)
    # 10 minutes left is less than the half of the default ttl (1h) a token must have left: a new token.
    second, _run = make_token(lab, "cloud", tmp_path, run_id=run_id, verbosity=0)
    assert second["changed"] is True and second["reused"] is False and second["token_id"] != first["token_id"]
    # Other groups: a new token too, carrying them.
    group = "system:bootstrappers:hybridcloud-dr"
    third, _run = make_token(lab, "cloud", tmp_path, run_id=run_id, groups=[DEFAULT_GROUP, group], verbosity=0)
    assert third["changed"] is True and third["token_id"] not in (first["token_id"], second["token_id"])
    assert token_secrets(lab, "cloud")[f"bootstrap-token-{third['token_id']}"]["auth-extra-groups"] == f"{DEFAULT_GROUP},{group}"
    # The run's tokens go together.
    removed = run_module("bootstrap_token", {"kubeconfig": str(lab.kubeconfig("cloud")), "state": "absent", "run_id": run_id})
    assert sorted(removed["deleted"]) == sorted([first["token_id"], second["token_id"], third["token_id"]])
    assert not [name for name, secret in token_secrets(lab, "cloud").items() if secret["_labels"].get("migration.hybridcloud.io/run-id") == run_id]


def test_absent_by_token_or_token_id_deletes_only_that_token(lab: Lab, tmp_path: Path) -> None:
    one, _run = make_token(lab, "cloud", tmp_path, verbosity=0)
    two, _run = make_token(lab, "cloud", tmp_path, verbosity=0, wait_for_signature=False)
    assert one["token_id"] != two["token_id"] and one["changed"] and two["changed"]
    assert two["discovery_verified"] is False

    by_token = run_module("bootstrap_token", {"kubeconfig": str(lab.kubeconfig("cloud")), "state": "absent", "token": one["token"]}, verbosity=3)
    assert by_token["changed"] is True and by_token["deleted"] == [one["token_id"]]
    assert one["token"].split(".")[1] not in by_token.run.output
    left = token_secrets(lab, "cloud")
    assert f"bootstrap-token-{one['token_id']}" not in left and f"bootstrap-token-{two['token_id']}" in left

    checked = run_module("bootstrap_token", {"kubeconfig": str(lab.kubeconfig("cloud")), "state": "absent", "token_id": two["token_id"]}, check=True)
    assert checked["changed"] is True and checked["deleted"] == [two["token_id"]]
    assert f"bootstrap-token-{two['token_id']}" in token_secrets(lab, "cloud")
    by_id = run_module("bootstrap_token", {"kubeconfig": str(lab.kubeconfig("cloud")), "state": "absent", "token_id": two["token_id"]})
    assert by_id["changed"] is True and f"bootstrap-token-{two['token_id']}" not in token_secrets(lab, "cloud")


def test_check_mode_creates_nothing_and_returns_no_token(lab: Lab) -> None:
    before = token_secrets(lab, "cloud")
    checked = run_module("bootstrap_token", {"kubeconfig": str(lab.kubeconfig("cloud")), "run_id": f"mig-{uuid.uuid4().hex[:8]}"}, check=True)
    assert checked["changed"] is True and "token" not in checked and checked["token_id"] is None
    assert "would create a bootstrap token valid for 1h; the token is not returned in check mode" in checked["msg"]
    assert checked["ca_cert_hash"] == lab.ca_cert_hash("cloud")
    assert token_secrets(lab, "cloud") == before


@pytest.mark.parametrize(
    "args, needles",
    [
        ({"ttl": "2h"}, ["ttl 2h is longer than the 1 hour a bootstrap token may live here", "use a ttl of 1h or less"]),
        ({"ttl": "3601"}, ["ttl 3601s is longer than the 1 hour"]),
        ({"ttl": "one hour"}, ["ttl 'one hour' is not a duration"]),
        ({"ttl": "10m", "reuse_min_ttl": "10m"}, ["no token could ever be reused"]),
        ({"groups": ["system:nodes"]}, ["'system:nodes'", "system:bootstrappers:"]),
        ({"run_id": "not a label"}, ["cannot be a Kubernetes label value"]),
        ({"token_id": "abcdef"}, ["token_id and token are for state=absent"]),
        ({"state": "absent", "token_id": "ABC"}, ["token_id 'ABC' is not a bootstrap token id"]),
        ({"state": "absent"}, ["state is absent but any of the following are missing: token_id, token, run_id"]),
    ],
)
def test_bad_options_are_refused_before_anything_is_made(lab: Lab, args: dict[str, Any], needles: list[str]) -> None:
    before = token_secrets(lab, "cloud")
    result = run_module("bootstrap_token", {"kubeconfig": str(lab.kubeconfig("cloud")), **args})
    refused(result, *needles)
    assert token_secrets(lab, "cloud") == before


def test_discovery_that_a_join_would_fail_fails_the_task_and_leaves_no_token(lab_factory: Any, tmp_path: Path) -> None:
    """In a private lab: first anonymous reads of cluster-info are forbidden, then the bootstrapsigner is gone."""
    from kubernetes import client

    private = lab_factory(onprem_nodes=1, cloud_nodes=0)
    args = {"kubeconfig": str(private.kubeconfig("onprem"))}
    rbac = client.RbacAuthorizationV1Api(private.api("onprem"))
    rbac.delete_namespaced_role_binding("kubeadm:bootstrap-signer-clusterinfo", "kube-public")

    forbidden = run_module("bootstrap_token", args)
    refused(forbidden, "An anonymous client may not read kube-public/cluster-info", "403", "was deleted again", "kubeadm:bootstrap-signer-clusterinfo")
    assert token_secrets(private, "onprem") == {}
    # Without the anonymous check the signature alone is verified, and the token is made.
    unchecked, _run = make_token(private, "onprem", tmp_path, verify_discovery=False, verbosity=0)
    assert unchecked["signed"] is True and unchecked["discovery_verified"] is False
    assert list(token_secrets(private, "onprem")) == [f"bootstrap-token-{unchecked['token_id']}"]

    controller = private.processes("onprem")["onprem/kube-controller-manager"]
    os.kill(controller.pid, signal.SIGKILL)
    wait_until("kube-controller-manager gone", lambda: not controller.alive(), 10)
    unsigned = run_module("bootstrap_token", dict(args, verify_discovery=False, wait_timeout=5))
    refused(unsigned, "was not signed for bootstrap token", "within 5 s", "was deleted again", "bootstrapsigner")
    assert list(token_secrets(private, "onprem")) == [f"bootstrap-token-{unchecked['token_id']}"]
    # Not waiting: the token is made, and the result says it is not signed yet.
    not_waited, _run = make_token(private, "onprem", tmp_path, wait_for_signature=False, verbosity=0)
    assert not_waited["changed"] is True and not_waited["signed"] is False and not_waited["discovery_verified"] is False
