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
    assert cr.SETTING in decision.reason and "worker_node role" in decision.reason
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


# -- containerd ---------------------------------------------------------------------------------

CONTAINERD_ON = "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_experimental_restore_via_create = true\n"
CONTAINERD_2_3 = "containerd github.com/containerd/containerd/v2 v2.3.7 lab"


def containerd(tmp_path: Path, text: str | None, **imports: str) -> cr.ContainerdSettings | None:
    if text is not None:
        write(tmp_path / "config.toml", text)
    for name, body in imports.items():
        write(tmp_path / "conf.d" / name, body)
    return cr.read_containerd_settings(str(tmp_path / "config.toml"))


def test_containerd_with_restore_via_create_enabled_restores(tmp_path):
    read = containerd(tmp_path, CONTAINERD_ON)
    assert read is not None and read.sources == [str(tmp_path / "config.toml")] and not read.effective
    decision = cr.decide_containerd("n1", read, GOOD_CRIU, str(tmp_path / "config.toml"))
    assert decision.supported and decision.ready and decision.runtime == "containerd" and decision.mode == "restore_via_create", decision
    assert read.address() == "/run/containerd/containerd.sock" and read.snapshotter() == "overlayfs"


def test_containerd_with_restore_off_names_the_key_the_table_the_file_and_the_fix(tmp_path):
    for text in ("version = 3\n", "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\nenable_experimental_restore_via_create = false\n"):
        decision = cr.decide_containerd("n1", containerd(tmp_path, text), GOOD_CRIU, str(tmp_path / "config.toml"))
        assert not decision.supported and not decision.ready and decision.runtime == "containerd"
        assert decision.reason.startswith("node n1 has containerd without checkpoint restore enabled"), decision.reason
        assert ('set enable_experimental_restore_via_create = true in [plugins."io.containerd.cri.v1.runtime"] of %s'
                % (tmp_path / "config.toml")) in decision.reason
        assert "worker_node_container_runtime=containerd" in decision.reason and decision.reason.endswith("starts from its image")


def test_containerd_enable_criu_false_wins_over_restore(tmp_path):
    read = containerd(tmp_path, CONTAINERD_ON + "  enable_criu = false\n")
    decision = cr.decide_containerd("n1", read, GOOD_CRIU)
    assert not decision.supported and decision.mode == "criu disabled" and "enable_criu = false" in decision.reason


def test_containerd_version_2_config_and_imports_are_migrated_and_merged_like_containerd(tmp_path):
    main = ('version = 2\nimports = ["conf.d/*.toml"]\n[grpc]\n  address = "/run/k8s/containerd.sock"\n'
            '[plugins."io.containerd.grpc.v1.cri"]\n  enable_experimental_restore_via_create = false\n'
            '[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "native"\n')
    read = containerd(tmp_path, main, **{"50-restore.toml": CONTAINERD_ON})
    assert read is not None and read.sources == [str(tmp_path / "config.toml"), str(tmp_path / "conf.d/50-restore.toml")]
    assert read.address() == "/run/k8s/containerd.sock" and read.snapshotter() == "native"
    assert cr.decide_containerd("n1", read, GOOD_CRIU).supported  # the import, read later, turns it on
    only_main = containerd(tmp_path / "other", main)
    assert not cr.decide_containerd("n1", only_main, GOOD_CRIU).supported


def test_containerd_config_dump_without_the_opt_in_key_is_an_older_release_that_restores(tmp_path):
    dumped = "version = 3\n[plugins]\n  [plugins.'io.containerd.cri.v1.runtime']\n    enable_criu = true\n"
    old = cr.read_containerd_settings("/nonexistent", dumped, "containerd github.com/containerd/containerd/v2 v2.1.4 x")
    assert old is not None and old.effective and old.sources == ["containerd config dump"]
    assert cr.decide_containerd("n1", old, GOOD_CRIU).supported
    from_file = containerd(tmp_path, "version = 3\n")
    assert not cr.decide_containerd("n1", from_file, GOOD_CRIU).supported  # a file alone proves nothing about defaults


def test_containerd_1_7_cannot_restore_whatever_its_config_says(tmp_path):
    read = cr.read_containerd_settings("/x", CONTAINERD_ON, "containerd containerd.io 1.7.24 88bf19b")
    decision = cr.decide_containerd("n1", read, GOOD_CRIU)
    assert not decision.supported and "has containerd 1.7 (containerd containerd.io 1.7.24 88bf19b), which cannot restore" in decision.reason


def test_containerd_needs_criu_3_16_and_a_passing_check(tmp_path):
    read = containerd(tmp_path, CONTAINERD_ON)
    old = cr.decide_containerd("n1", read, cr.Criu("/usr/sbin/criu", "Version: 3.15", 0, ""))
    assert not old.supported and old.ready and "criu Version: 3.15, older than the 3.16 it needs" in old.reason
    missing = cr.decide_containerd("n1", read, cr.Criu())
    assert not missing.supported and "has containerd with checkpoint restore enabled but no criu" in missing.reason
    assert cr.criu_number("Version: 4.1.1") == 40101 and cr.criu_number("") is None


def test_a_bad_containerd_toml_is_named(tmp_path):
    with pytest.raises(ValueError, match="config.toml is not valid TOML"):
        containerd(tmp_path, "[plugins.'io.containerd.cri.v1.runtime'\n")
    with pytest.raises(ValueError, match="50-bad.toml is not valid TOML"):
        containerd(tmp_path, 'version = 3\nimports = ["conf.d/*.toml"]\n', **{"50-bad.toml": "enable = \n"})


def test_neither_runtime_names_both_settings_and_the_fix():
    decision = cr.decide_node("n1", None, None, GOOD_CRIU)
    assert not decision.supported and decision.runtime == ""
    assert decision.reason.startswith("node n1 has no CRI-O (no /etc/crio/crio.conf") and "and no containerd (no /etc/containerd/config.toml" in decision.reason
    assert cr.SETTING in decision.reason and "enable_experimental_restore_via_create = true" in decision.reason
    assert "worker_node role" in decision.reason


def test_the_only_runtime_there_is_the_one_decided_for(tmp_path):
    crio_on = cr.read_settings("/x", "/x", '[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_restore"\n')
    only_crio = cr.decide_node("n1", crio_on, None, GOOD_CRIU)
    assert only_crio.supported and only_crio.runtime == "crio" and only_crio.runtime_note == ""
    only_containerd = cr.decide_node("n1", None, containerd(tmp_path, CONTAINERD_ON), GOOD_CRIU)
    assert only_containerd.supported and only_containerd.runtime == "containerd"


def test_with_both_the_kubelets_endpoint_decides_else_the_one_set_up_to_restore(tmp_path):
    crio_off = cr.read_settings("/x", "/x", '[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_only"\n')
    crio_on = cr.read_settings("/x", "/x", '[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_restore"\n')
    ctrd = containerd(tmp_path, CONTAINERD_ON)
    flags = 'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/crio/crio.sock --node-ip=10.0.0.5"\n'
    endpoint = cr.kubelet_endpoint("containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n", flags)
    assert endpoint == "unix:///var/run/crio/crio.sock"  # kubeadm's flags win over the config file
    kubelet_crio = cr.decide_node("n1", crio_off, ctrd, GOOD_CRIU, endpoint)
    assert kubelet_crio.runtime == "crio" and not kubelet_crio.supported and "the kubelet uses crio" in kubelet_crio.runtime_note
    by_config = cr.decide_node("n1", crio_on, ctrd, GOOD_CRIU, cr.kubelet_endpoint("containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n"))
    assert by_config.runtime == "containerd" and by_config.supported
    unknown = cr.decide_node("n1", crio_off, ctrd, GOOD_CRIU)
    assert unknown.runtime == "containerd" and unknown.supported and "chose containerd, the one set up to restore" in unknown.runtime_note
    both_on = cr.decide_node("n1", crio_on, ctrd, GOOD_CRIU)
    assert both_on.runtime == "crio" and "endpoint is unknown; chose CRI-O" in both_on.runtime_note
    forced = cr.decide_node("n1", crio_on, ctrd, GOOD_CRIU, runtime="containerd")
    assert forced.runtime == "containerd" and forced.runtime_note == "asked for containerd"
