"""The worker_node role against real Debian 13 roots, over the chroot connection an image build uses.

molecule/worker_node converges a root, checks idempotence and verifies the result like goss.
These tests cover what a scenario's fixed sequence does not: check mode on a fresh root changes
nothing, a binary that does not match its sha256 pin is refused before anything changes, the
URL source (get_url checks the sha256) and the version pin (a kubelet of another version fails).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.helpers.ansible_run import REPO, Run, run_playbook
from tests.helpers.debian_root import make_instance, run_in_root

pytestmark = pytest.mark.integration

LAB_BIN = REPO / ".build" / "lab" / "bin"
HYPERKUBE = LAB_BIN / "hyperkube"
LAB_VERSION = "1.37.2"
BASE_PACKAGES = ("python3", "systemd")
# Everything the role installs from Debian, baked into a cached root so the tests that converge
# do not download them again each time (the role then finds them installed).
WORKER_PACKAGES = (
    *BASE_PACKAGES,
    "criu", "libcriu2", "crun", "runc", "conmon", "checkpointctl", "restic",
    "containernetworking-plugins", "conntrack", "iptables", "socat", "ethtool", "kmod",
    "procps", "ca-certificates", "systemd-timesyncd",
)  # fmt: skip

PLAYBOOK = """---
- name: Make a worker node
  hosts: all
  gather_facts: false
  roles:
    - role: hybridcloud.migration.worker_node
"""


@pytest.fixture(scope="module")
def hyperkube_sha256() -> str:
    if not HYPERKUBE.is_file():
        pytest.fail(f"{HYPERKUBE} is missing: run `make lab-build` (the Makefile's integration target does)")
    digest = hashlib.sha256()
    with HYPERKUBE.open("rb") as binary:
        for block in iter(lambda: binary.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _instance(tmp_path: Path, packages: tuple[str, ...]) -> Path:
    return make_instance(tmp_path / "root", packages)


def _apply(tmp_path: Path, root: Path, role_vars: dict, *, check: bool = False) -> Run:
    playbook = tmp_path / "worker.yml"
    playbook.write_text(PLAYBOOK)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {
                        "node-1": {
                            "ansible_connection": "community.general.chroot",
                            "ansible_host": str(root),
                            "ansible_python_interpreter": "/usr/bin/python3",
                        }
                    }
                }
            }
        )
    )
    return run_playbook(playbook, inventory=inventory, extra_vars=role_vars, check=check)


def _files_vars(src: str, sha256: str, version: str = LAB_VERSION) -> dict:
    return {
        "worker_node_kubernetes_version": version,
        "worker_node_kubernetes_source": "files",
        "worker_node_kubernetes_files": [
            {"name": "hyperkube", "src": src, "sha256": sha256, "links": ["kubelet", "kubeadm", "kubectl"]}
        ],
        "worker_node_crio_install": False,
    }


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under the root with its type, mode, size, mtime and link target."""
    tree: dict[str, tuple] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            info = path.lstat()
            target = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
            tree[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns, target)
    return tree


def _diff(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    changed = [p for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(
        [f"+{p}" for p in after.keys() - before.keys()] + [f"-{p}" for p in before.keys() - after.keys()] + changed
    )


def _failed_messages(run: Run) -> str:
    """The messages of the failed tasks, and of their failed loop items."""
    messages = []
    for result in run.task_results("node-1"):
        if result.get("failed"):
            messages.append(str(result.get("msg", "")))
            messages += [str(item.get("msg", "")) for item in result.get("results", []) if item.get("failed")]
    return "\n".join(messages)


def test_check_mode_on_a_fresh_root_reports_the_changes_and_makes_none(tmp_path, hyperkube_sha256):
    root = _instance(tmp_path, BASE_PACKAGES)
    # A fresh host's package lists are fetched first (the image build does the same), and the apt
    # module needs python3-apt to answer in check mode (a normal run installs it by itself).
    run_in_root(root, ["apt-get", "update", "-qq"], timeout=300)
    run_in_root(root, ["apt-get", "install", "-qq", "-y", "--no-install-recommends", "python3-apt"], timeout=300)
    before = _snapshot(root)

    run = _apply(tmp_path, root, _files_vars(str(HYPERKUBE), hyperkube_sha256), check=True)

    assert run.returncode == 0, run.output[-4000:]
    stats = run.stats("node-1")
    assert stats["failures"] == 0 and stats["changed"] >= 10, stats
    changed = {r["_task"].split(" : ", 1)[-1] for r in run.task_results("node-1") if r.get("changed")}
    assert {"Install the packages", "Copy the binaries from the controller", "Set the sysctls at boot"} <= changed
    # What the connection and apt's simulation leave (Ansible's remote tmp, apt's planner log) is no change.
    artefacts = {"+root/.ansible", "+root/.ansible/tmp", "root", "tmp", "var/log/apt", "var/log/apt/eipp.log.xz"}
    assert set(_diff(before, _snapshot(root))) <= artefacts


def test_a_binary_that_does_not_match_its_sha256_is_refused_before_anything_changes(tmp_path, hyperkube_sha256):
    root = _instance(tmp_path, BASE_PACKAGES)
    before = _snapshot(root)
    wrong = hashlib.sha256(b"not the lab's hyperkube").hexdigest()

    run = _apply(tmp_path, root, _files_vars(str(HYPERKUBE), wrong))

    assert run.returncode != 0
    message = _failed_messages(run)
    assert f"{HYPERKUBE} has sha256 {hyperkube_sha256}" in message, message
    assert f"expected {wrong}: nothing was installed" in message
    assert _diff(before, _snapshot(root)) == []


def test_url_source_installs_the_pinned_version_and_refuses_another(tmp_path, hyperkube_sha256):
    root = _instance(tmp_path, WORKER_PACKAGES)
    # An air-gapped site's mirror, seen by the node as a URL (file:// here; get_url checks the sha256).
    (root / "srv/mirror").mkdir(parents=True)
    shutil.copy2(HYPERKUBE, root / "srv/mirror/hyperkube")
    url = "file:///srv/mirror/hyperkube"

    older = _apply(tmp_path, root, _files_vars(url, hyperkube_sha256, version="1.37.1"))
    assert older.returncode != 0
    message = _failed_messages(older)
    assert "kubelet is not at v1.37.1 (Kubernetes v1.37.2" in message, older.output[-4000:]
    assert not (root / "etc/systemd/system/multi-user.target.wants/kubelet.service").exists()
    # Over a chroot the build host's kernel and systemd are left alone: the handlers (flushed
    # before the Kubernetes step, so even this failed run reaches them) were notified, and skipped.
    handlers = {"Load the kernel modules now", "Apply the sysctls now"}
    ran = {r["_task"].split(" : ", 1)[-1]: r for r in older.task_results("node-1")}
    assert handlers <= ran.keys()
    assert all(ran[name].get("skipped") or ran[name].get("skipped_reason") for name in handlers), {
        name: ran[name] for name in handlers
    }

    pinned = _apply(tmp_path, root, _files_vars(url, hyperkube_sha256))
    assert pinned.returncode == 0, pinned.output[-4000:]
    version = run_in_root(root, ["kubelet", "--version"], timeout=60).stdout.strip()
    assert version == f"Kubernetes v{LAB_VERSION}"
    assert os.readlink(root / "usr/bin/kubeadm") == "hyperkube"
    enabled = subprocess.run(
        ["systemctl", f"--root={root}", "is-enabled", "kubelet.service"], capture_output=True, text=True, check=False
    )
    assert enabled.stdout.strip() == "enabled"

    again = _apply(tmp_path, root, _files_vars(url, hyperkube_sha256))
    assert again.returncode == 0 and again.stats("node-1")["changed"] == 0, again.output[-4000:]


KUBELET_UNIT = """[Unit]
Description=kubelet: The Kubernetes Node Agent
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always

[Install]
WantedBy=multi-user.target
"""


def _deb(out: Path, package: str, version: str, files: dict[str, Path | str], depends: str = "") -> Path:
    """A .deb built with dpkg-deb: ``files`` maps paths to a file to copy, or to "->target" for a symlink."""
    tree = out / f"{package}_{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    control = (
        f"Package: {package}\nVersion: {version}\nArchitecture: amd64\nMaintainer: tests <tests@example.invalid>\n"
    )
    control += f"Depends: {depends}\n" if depends else ""
    (tree / "DEBIAN/control").write_text(control + f"Description: {package} for the worker_node tests\n")
    for inner, source in files.items():
        path = tree / inner
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, str) and source.startswith("->"):
            path.symlink_to(source[2:])
        elif isinstance(source, Path):
            shutil.copy2(source, path)
        else:
            path.write_text(source)
            path.chmod(0o755 if inner.startswith("usr/bin/") else 0o644)
    deb = out / f"{package}_{version}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Znone", "-b", str(tree), str(deb)], check=True, capture_output=True
    )
    shutil.rmtree(tree)
    return deb


def _signed_flat_repository(repo: Path, debs: list[Path], gnupg_home: Path) -> None:
    """A flat apt repository (``Suites: /``, as pkgs.k8s.io's) with an InRelease signed by a fresh key."""
    stanzas = []
    for deb in debs:
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True).stdout
        data = deb.read_bytes()
        stanzas.append(
            control.rstrip("\n")
            + f"\nFilename: ./{deb.name}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    packages = "\n".join(stanzas).encode()
    (repo / "Packages").write_bytes(packages)
    (repo / "Release").write_text(
        "Origin: worker_node tests\nLabel: worker_node tests\nDate: Thu, 26 Nov 2026 00:00:00 UTC\n"
        f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n"
    )
    gpg = shutil.which("gpg")
    if gpg is None:
        pytest.fail("gpg is missing: the apt-source test signs its repository with it (apt-get install gpg)")
    gnupg_home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(gnupg_home)}
    batch = [gpg, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(
        [*batch, "--quick-gen-key", "worker_node tests", "rsa3072", "sign", "never"],
        env=env,
        check=True,
        capture_output=True,
    )
    key = subprocess.run([gpg, "--armor", "--export"], env=env, check=True, capture_output=True).stdout
    (repo / "Release.key").write_bytes(key)
    subprocess.run(
        [*batch, "--digest-algo", "SHA512", "--clearsign", "-o", str(repo / "InRelease"), str(repo / "Release")],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    # gpg started an agent for this home: stop it.
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False, capture_output=True)


def test_apt_source_installs_the_pinned_packages_from_a_signed_repository_and_holds_them(tmp_path):
    """The default source, against a signed mirror of pkgs.k8s.io's layout (pkgs.k8s.io itself is not reachable here).

    The mirror offers kubelet 1.37.2-1.1 (the lab's real binary) and a newer 1.37.3-1.1: the pin must win.
    """
    root = _instance(tmp_path, WORKER_PACKAGES)
    repo = root / "srv/k8s-mirror"
    repo.mkdir(parents=True)
    version = f"{LAB_VERSION}-1.1"
    debs = [
        _deb(tmp_path, "kubelet", version, {"usr/bin/hyperkube": HYPERKUBE, "usr/bin/kubelet": "->hyperkube",
                                            "usr/lib/systemd/system/kubelet.service": KUBELET_UNIT}),
        _deb(tmp_path, "kubeadm", version, {"usr/bin/kubeadm": "->hyperkube"}, depends=f"kubelet (= {version})"),
        _deb(tmp_path, "kubectl", version, {"usr/bin/kubectl": "->hyperkube"}, depends=f"kubelet (= {version})"),
        # A newer release the node must not get: the repository is per minor, the package version is pinned.
        _deb(tmp_path, "kubelet", "1.37.3-1.1", {"usr/bin/kubelet": "#!/bin/sh\necho Kubernetes v1.37.3\n"}),
    ]  # fmt: skip
    for deb in debs:
        shutil.move(deb, repo / deb.name)
    _signed_flat_repository(repo, [repo / deb.name for deb in debs], tmp_path / "gnupg")
    role_vars = {
        "worker_node_kubernetes_version": LAB_VERSION,
        "worker_node_kubernetes_apt_url": "file:///srv/k8s-mirror/",
        "worker_node_crio_install": False,
    }

    run = _apply(tmp_path, root, role_vars)

    assert run.returncode == 0, run.output[-4000:]
    assert run_in_root(root, ["kubelet", "--version"], timeout=60).stdout.strip() == f"Kubernetes v{LAB_VERSION}"
    installed = run_in_root(root, ["dpkg-query", "-W", "kubelet", "kubeadm", "kubectl"], timeout=60).stdout
    assert sorted(installed.split("\n")[:-1]) == [f"kubeadm\t{version}", f"kubectl\t{version}", f"kubelet\t{version}"]
    held = run_in_root(root, ["apt-mark", "showhold"], timeout=60).stdout.split()
    assert sorted(held) == ["kubeadm", "kubectl", "kubelet"]
    sources = (root / "etc/apt/sources.list.d/hcm-kubernetes.sources").read_text()
    assert "Signed-By: /etc/apt/keyrings/hcm-kubernetes.asc" in sources
    enabled = subprocess.run(
        ["systemctl", f"--root={root}", "is-enabled", "kubelet.service"], capture_output=True, text=True, check=False
    )
    assert enabled.stdout.strip() == "enabled"

    again = _apply(tmp_path, root, role_vars)
    assert again.returncode == 0 and again.stats("node-1")["changed"] == 0, again.output[-4000:]
