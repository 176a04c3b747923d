from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils import checkpoint_runtime as cr

GOOD_CRIU = cr.Criu("/usr/sbin/criu", "Version: 4.1.1", 0, "Looks good.")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def settings(tmp_path: Path, main: str | None = None, **drop_ins: str) -> cr.CrioSettings | None:
    if main is not None:
        write(tmp_path / "crio.conf", main)
    for name, text in drop_ins.items():
        write(tmp_path / "crio.conf.d" / name, text)
    return cr.read_settings(str(tmp_path / "crio.conf"), str(tmp_path / "crio.conf.d"))


def test_no_crio_at_all_names_the_setting_and_the_fix():
    decision = cr.decide("cloud-worker-3", None, GOOD_CRIU)
    assert not decision.supported and decision.mode == ""
    assert decision.reason.startswith("node cloud-worker-3 has no CRI-O (no /etc/crio/crio.conf")
    assert cr.SETTING in decision.reason and "worker role (issue 6)" in decision.reason
    assert decision.reason.endswith("the container starts from its image")


def test_checkpoint_restore_in_a_drop_in_enables_it(tmp_path):
    read = settings(tmp_path, '[crio.runtime]\ndefault_runtime = "crun"\n',
                    **{"10-checkpoint.conf": '[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_restore"\n'})
    assert read is not None and read.sources == [str(tmp_path / "crio.conf"), str(tmp_path / "crio.conf.d/10-checkpoint.conf")]
    assert read.value("crio", "runtime", "default_runtime") == "crun"  # the main file's tables survive the merge
    decision = cr.decide("n1", read, GOOD_CRIU)
    assert decision.supported and decision.mode == "checkpoint_restore" and decision.reason == ""


def test_later_drop_ins_win_as_in_crio(tmp_path):
    read = settings(tmp_path, None, **{
        "10-on.conf": '[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_restore"\n',
        "20-off.conf": '[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_only"\n',
        "ignored.toml": '[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_restore"\n',
    })
    decision = cr.decide("n1", read, GOOD_CRIU)
    assert not decision.supported and decision.mode == "checkpoint_only"
    assert "container_level_enabled = 'checkpoint_only'" in decision.reason and "20-off.conf" in decision.reason


def test_legacy_enable_criu_support_counts_only_when_crio_itself_says_it_predates_the_setting(tmp_path):
    legacy = '[crio.runtime]\nenable_criu_support = true\n'
    from_files = cr.decide("n1", settings(tmp_path, legacy), GOOD_CRIU)
    assert not from_files.supported and "only [crio.runtime] enable_criu_support = true" in from_files.reason
    old_crio = cr.decide("n1", cr.read_settings("/nonexistent", "/nonexistent", '[crio]\nroot = "/var/lib/containers/storage"\n' + legacy), GOOD_CRIU)
    assert old_crio.supported and old_crio.mode == "legacy enable_criu_support"
    new_crio = cr.read_settings("/x", "/x", legacy + '[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_only"\n')
    assert not cr.decide("n1", new_crio, GOOD_CRIU).supported


def test_crio_without_checkpoints_at_all(tmp_path):
    decision = cr.decide("n1", settings(tmp_path, '[crio.runtime]\ndefault_runtime = "runc"\n'), GOOD_CRIU)
    assert not decision.supported and "without checkpoint restore enabled" in decision.reason


def test_criu_missing_or_failing_its_check(tmp_path):
    read = cr.read_settings("/x", "/x", '[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_restore"\n')
    missing = cr.decide("n1", read, cr.Criu())
    assert not missing.supported and "no criu: install criu" in missing.reason
    failing = cr.decide("n1", read, cr.Criu("/usr/sbin/criu", "Version: 4.1", 1, "Error (criu/kerndat.c:1): Can't fetch file_stat\n"))
    assert not failing.supported and "criu check fails (exit 1: Error (criu/kerndat.c:1): Can't fetch file_stat)" in failing.reason


def test_an_unparsable_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="crio.conf is not valid TOML"):
        settings(tmp_path, "[crio.runtime\n")


def test_storage_follows_crios_own_settings(tmp_path):
    read = cr.read_settings("/x", "/x", '[crio]\nroot = "/srv/containers"\nrunroot = "/run/c"\nstorage_driver = "overlay"\n'
                                        'storage_option = ["overlay.mountopt=nodev"]\n')
    assert cr.storage(read) == {"root": "/srv/containers", "runroot": "/run/c", "driver": "overlay", "options": ["overlay.mountopt=nodev"]}
    assert cr.storage(None) == {"root": "", "runroot": "", "driver": "", "options": []}


def test_no_files_means_no_crio(tmp_path):
    assert settings(tmp_path) is None
