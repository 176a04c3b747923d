"""The plan holds no Secret values; ordered_restore puts them back from the backup, or says why it cannot."""

from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.ordered_restore import load_plan
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan import secret_data
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.options import PlanOptions
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.stages import build_plan
from tests.unit.fixtures import cluster as c

ARTIFACTS = [{"name": "hourly-20261125", "location": "s3://backups/velero/backups/hourly-20261125/hourly-20261125.tar.gz",
              "sha256": "ab" * 32, "created_at": "2026-11-25T19:00:00Z", "size": 1234}]
POLICY = {"Deployment/shop/api": "skip", "StatefulSet/db/cache": "skip"}


def planned(namespace_map=None):
    objects = c.onprem()
    plan = build_plan(objects, c.FAILED, PlanOptions(run_id="r", share_policy=POLICY, namespace_map=namespace_map or {}))
    return plan, objects


def secrets_of(plan):
    return {(m["metadata"].get("namespace"), m["metadata"]["name"]): m for s in plan["stages"] for m in s["objects"] if m["kind"] == "Secret"}


def test_the_plan_keeps_each_secrets_keys_and_where_its_values_are_but_no_value():
    plan, objects = planned()
    before = {key: copy.deepcopy(m) for key, m in secrets_of(plan).items()}
    assert before[("shop", "db-credentials")]["data"] == {"password": "c2VjcmV0"}, "the fixture's Secret moves with its values"

    assert secret_data.withhold(plan, ARTIFACTS, {}) == len(before)
    text = json.dumps(plan)
    for value in ("c2VjcmV0", "Y3J0", "a2V5", "cGc="):
        assert value not in text
    assert all("data" not in m and "stringData" not in m for m in secrets_of(plan).values())
    assert secrets_of(plan)[("shop", "tls")]["type"] == "kubernetes.io/tls"
    assert plan["secret_data"]["from"] == [{k: ARTIFACTS[0][k] for k in ("name", "location", "sha256", "created_at")}]
    assert {"namespace": "shop", "name": "tls", "source_namespace": "shop", "keys": ["tls.crt", "tls.key"]} in plan["secret_data"]["secrets"]

    loaded = load_plan(plan)
    assert loaded.secret_data == plan["secret_data"]
    assert secret_data.fill([m for s in loaded.stages for m in s.objects], loaded.secret_data, objects) == len(before)
    assert {key: m.get("data") for key, m in secrets_of({"stages": [{"objects": s.objects} for s in loaded.stages]}).items()} == {
        key: m.get("data") for key, m in before.items()}


def test_a_renamed_namespace_finds_its_secrets_under_their_source_namespace():
    plan, objects = planned({"shop": "shop-cloud"})
    secret_data.withhold(plan, ARTIFACTS, {"shop": "shop-cloud"})
    entry = next(e for e in plan["secret_data"]["secrets"] if e["name"] == "db-credentials")
    assert (entry["namespace"], entry["source_namespace"]) == ("shop-cloud", "shop")
    manifests = [m for s in plan["stages"] for m in s["objects"]]
    secret_data.fill(manifests, plan["secret_data"], objects)
    assert secrets_of(plan)[("shop-cloud", "db-credentials")]["data"] == {"password": "c2VjcmV0"}


def test_a_secret_gone_from_the_backup_or_short_of_a_key_is_refused_with_the_fix():
    plan, objects = planned()
    secret_data.withhold(plan, ARTIFACTS, {})
    manifests = [m for s in plan["stages"] for m in s["objects"]]
    without = [o for o in objects if not (o["kind"] == "Secret" and o["metadata"]["name"] == "tls")]
    with pytest.raises(MigrationError, match=r"Secret shop/tls is not in the Velero backup the plan was made from \(hourly-20261125\)") as gone:
        secret_data.fill(copy.deepcopy(manifests), plan["secret_data"], without)
    assert "replan=true" in gone.value.fix

    short = copy.deepcopy(objects)
    next(o for o in short if o["kind"] == "Secret" and o["metadata"]["name"] == "tls")["data"].pop("tls.key")
    with pytest.raises(MigrationError, match="lacks the keys tls.key"):
        secret_data.fill(copy.deepcopy(manifests), plan["secret_data"], short)


def test_secrets_without_values_and_plans_without_secrets_need_nothing_from_the_backup():
    plan = {"stages": [{"name": "config", "objects": [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "empty", "namespace": "a"}, "type": "Opaque"},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}, "data": {"k": "v"}}]}]}
    assert secret_data.withhold(plan, ARTIFACTS, {}) == 0
    assert "secret_data" not in plan and not secret_data.needed(plan)
    assert plan["stages"][0]["objects"][1]["data"] == {"k": "v"}
