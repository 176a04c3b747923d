"""What every node agent does the same way: a SIGTERM ends a run like a failure, its clean-ups done."""

from __future__ import annotations

import os
import signal

from ansible_collections.hybridcloud.migration.plugins.module_utils import agent_runtime


def test_sigterm_mid_run_runs_the_clean_ups_and_fails_the_run(tmp_path, caplog):
    archive = tmp_path / "checkpoint-counter.tar"
    settings = tmp_path / "settings.json"
    settings.write_text("{}")

    def run(_path):
        archive.write_bytes(b"every memory page")
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # what systemd sends when the unit's timeout runs out
            raise AssertionError("the run went on after SIGTERM")
        finally:
            archive.unlink()

    before = signal.getsignal(signal.SIGTERM)
    assert agent_runtime.agent_main("hcm-test-agent", "test", str(settings), run, ["--config", str(settings)]) == 1
    assert not archive.exists()
    assert "backup FAILED: Stopped by SIGTERM" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is before
