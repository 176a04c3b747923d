from __future__ import annotations

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError


def test_message_names_problem_then_fix_and_fail_json_keeps_details():
    err = MigrationError("Bucket 'x' does not exist.", "create it.", bucket="x")
    assert err.message == "Bucket 'x' does not exist. Fix: create it."
    assert str(err) == err.message
    assert err.fail_json_kwargs() == {"msg": err.message, "problem": "Bucket 'x' does not exist", "fix": "create it", "bucket": "x"}
