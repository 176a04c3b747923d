"""restic (Debian 13's 0.18) against the real S3 server, driven by the node agent's Restic class."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import time

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from tests.unit.roles.test_node_backup_agent import agent

pytestmark = pytest.mark.integration


def tree_digest(root: pathlib.Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*")) if path.is_file()
    }


@pytest.fixture
def restic(debian_root, s3_server, s3_bucket, tmp_path):
    password = tmp_path / "password"
    password.write_text("correct horse battery staple\n")
    password.chmod(0o600)
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_DEFAULT_REGION": s3_server.region}
    repository = "s3:%s/%s/restic/onprem" % (s3_server.endpoint_url, s3_bucket)
    client = agent.Restic(str(debian_root / "usr/bin/restic"), repository, str(password), env, host="worker-1")
    client.ensure_repository()
    return client


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    (root / "db").mkdir(parents=True)
    (root / "db" / "table.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    for index in range(50):
        (root / "db" / ("row-%02d.json" % index)).write_text('{"row": %d}\n' % index)
    (root / "empty").mkdir()
    return root


def restore(restic, snapshot_id, target):
    subprocess.run([restic.binary, "restore", snapshot_id, "--target", str(target)], env=restic.env, check=True, capture_output=True)


def test_restored_bytes_equal_backed_up_bytes_and_a_second_run_uploads_almost_nothing(restic, data_dir, tmp_path):
    first = restic.backup(str(data_dir), ["hcm", "kind=local_data", "pvc=data-db-0"])
    assert first["total_bytes_processed"] >= 8 * 1024 * 1024
    restore(restic, first["snapshot_id"], tmp_path / "restored")
    assert tree_digest(tmp_path / "restored" / data_dir.relative_to("/")) == tree_digest(data_dir)

    second = restic.backup(str(data_dir), ["hcm", "kind=local_data", "pvc=data-db-0"])
    ratio = second["data_added"] / second["total_bytes_processed"]
    print("restic second run over unchanged data: %d of %d bytes uploaded (%.3f %%)"
          % (second["data_added"], second["total_bytes_processed"], 100 * ratio))
    assert second["snapshot_id"] != first["snapshot_id"]
    assert ratio < 0.01


def test_a_locked_repository_and_a_wrong_password_are_explained(restic, data_dir, tmp_path):
    before = restic.backup(str(data_dir), ["hcm"])
    # Another run holds the repository: a backup reading from a pipe keeps its lock until stdin closes.
    holder = subprocess.Popen([restic.binary, "backup", "--stdin", "--host", "other-run"], env=restic.env,
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not subprocess.run([restic.binary, "list", "locks", "--no-lock"], env=restic.env, capture_output=True, text=True, check=False).stdout.strip():
            assert time.monotonic() < deadline, "the other run never took its lock"
            time.sleep(0.1)
        with pytest.raises(MigrationError) as err:
            restic.forget([before["snapshot_id"]], lock_wait=None)
        assert "is locked by another run while applying retention" in err.value.problem
        assert "restic unlock" in err.value.fix
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # Nothing was damaged: the earlier snapshot restores whole.
    restore(restic, before["snapshot_id"], tmp_path / "after-lock")
    assert tree_digest(tmp_path / "after-lock" / data_dir.relative_to("/")) == tree_digest(data_dir)

    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    intruder = agent.Restic(restic.binary, restic.repository, str(wrong), {}, host="worker-1")
    intruder.env.update({k: v for k, v in restic.env.items() if k.startswith("AWS_")})
    with pytest.raises(MigrationError) as err:
        intruder.backup(str(data_dir), ["hcm"])
    assert "could not open" in err.value.problem and "with the configured password" in err.value.problem
