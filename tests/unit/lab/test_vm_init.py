"""The lab VM's PID 1 (lab/hclab/vm/init.py) reads units as systemd does, for the units worker_node installs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.helpers.ansible_run import REPO

SPEC = importlib.util.spec_from_file_location("hclab_vm_init", REPO / "lab/hclab/vm/init.py")
assert SPEC and SPEC.loader
init = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(init)

KUBELET_UNIT = (REPO / "roles/worker_node/templates/kubelet.service.j2").read_text().replace(
    "{{ ansible_managed }}", "managed").replace("{{ worker_node_kubernetes_bin_dir }}", "/usr/bin")
KUBEADM_DROPIN = (REPO / "roles/worker_node/templates/10-kubeadm.conf.j2").read_text().replace(
    "{{ ansible_managed }}", "managed").replace("{{ worker_node_kubernetes_bin_dir }}", "/usr/bin")


@pytest.fixture
def units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    for directory in (etc, lib):
        directory.mkdir()
    monkeypatch.setattr(init, "UNIT_DIRS", (etc, tmp_path / "run", lib))
    return tmp_path


def test_kubeadms_drop_in_resets_exec_start_and_its_flags_file_is_read_at_each_start(units: Path) -> None:
    (units / "lib/kubelet.service").write_text(KUBELET_UNIT)
    (units / "etc/kubelet.service.d").mkdir()
    dropin = KUBEADM_DROPIN.replace("/var/lib/kubelet/kubeadm-flags.env", str(units / "flags.env"))
    (units / "etc/kubelet.service.d/10-kubeadm.conf").write_text(dropin.replace("/etc/default/kubelet", str(units / "default")))
    settings = init.read_unit("kubelet.service")
    assert settings["ExecStart"] == ["/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS"]
    assert settings["Restart"] == ["always"] and settings["RestartSec"] == ["10"]
    before = init.command(settings["ExecStart"][-1], init.environment(settings))[1]
    assert before == ["/usr/bin/kubelet", "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
                      "--kubeconfig=/etc/kubernetes/kubelet.conf", "--config=/var/lib/kubelet/config.yaml"]
    # kubeadm join writes the flags file; the next start reads it (optional files may be missing).
    (units / "flags.env").write_text('KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/containerd/containerd.sock --node-ip=10.0.0.5"\n')
    after = init.command(settings["ExecStart"][-1], init.environment(settings))[1]
    assert after[-2:] == ["--container-runtime-endpoint=unix:///run/containerd/containerd.sock", "--node-ip=10.0.0.5"]


def test_braced_variables_stay_one_word_and_a_dash_ignores_failure() -> None:
    env = {"OPTS": "-a -b", "DIR": "/x y"}
    assert init.command("-/sbin/modprobe overlay", env) == (True, ["/sbin/modprobe", "overlay"])
    assert init.command("/bin/run $OPTS --dir=${DIR} ${DIR}", env) == (False, ["/bin/run", "-a", "-b", "--dir=/x y", "/x y"])


def test_a_required_environment_file_that_is_missing_is_an_error(units: Path) -> None:
    (units / "lib/x.service").write_text(f"[Service]\nEnvironmentFile={units}/missing\nExecStart=/bin/true\n")
    with pytest.raises(FileNotFoundError, match="missing"):
        init.environment(init.read_unit("x.service"))


def test_settings_outside_the_service_section_are_ignored_and_etc_wins_over_lib(units: Path) -> None:
    (units / "lib/ssh.service").write_text("[Unit]\nExecStart=/nope\n[Service]\nExecStart=/usr/sbin/sshd -D\nType=notify\n")
    assert init.read_unit("ssh.service")["ExecStart"] == ["/usr/sbin/sshd -D"]
    (units / "etc/ssh.service").write_text("[Service]\nExecStart=/usr/sbin/sshd -D -e\n")
    assert init.read_unit("ssh.service") == {"ExecStart": ["/usr/sbin/sshd -D -e"]}
