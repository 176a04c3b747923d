"""The worker_node role against real Debian 13 roots, over the chroot connection an image build uses.

molecule/worker_node converges a root, checks idempotence and verifies the result like goss.
These tests cover what a scenario's fixed sequence does not: check mode on a fresh root changes
nothing, a binary that does not match its sha256 pin is refused before anything changes, the
URL source (get_url checks the sha256), the version pin (a kubelet of another version fails),
and the containerd runtime: the lab's containerd v2.3.7 (lab/build-containerd.sh) installed,
configured for checkpoint restore, and really started inside the root with the role's config.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from lab.hclab.debian_root import make_instance, run_in_root
from tests.helpers.ansible_run import REPO, Run, run_playbook

pytestmark = pytest.mark.integration

LAB_BIN = REPO / ".build" / "lab" / "bin"
HYPERKUBE = LAB_BIN / "hyperkube"
LAB_VERSION = "1.37.2"
CONTAINERD_BIN = REPO / ".build" / "lab" / "containerd" / "bin"
CONTAINERD_VERSION = "2.3.7"
CONTAINERD_TOOLS = ("containerd", "containerd-shim-runc-v2", "ctr")
CRI_RUNTIME = "io.containerd.cri.v1.runtime"
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as binary:
        for block in iter(lambda: binary.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def hyperkube_sha256() -> str:
    if not HYPERKUBE.is_file():
        pytest.fail(f"{HYPERKUBE} is missing: run `make lab-build` (the Makefile's integration target does)")
    return _sha256(HYPERKUBE)


@pytest.fixture(scope="module")
def containerd_files() -> list[dict[str, str]]:
    """worker_node_containerd_files for the lab's containerd build, each with its sha256."""
    missing = [tool for tool in CONTAINERD_TOOLS if not (CONTAINERD_BIN / tool).is_file()]
    if missing:
        pytest.fail(f"{missing} missing in {CONTAINERD_BIN}: run `bash lab/build-containerd.sh`")
    return [{"name": tool, "src": str(CONTAINERD_BIN / tool), "sha256": _sha256(CONTAINERD_BIN / tool)}
            for tool in CONTAINERD_TOOLS]  # fmt: skip


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


def _containerd_vars(hyperkube_sha256: str, files: list[dict[str, str]], **more) -> dict:
    """The lab worker's settings: containerd with the cgroupfs driver, Kubernetes from the lab's build."""
    return {
        **_files_vars(str(HYPERKUBE), hyperkube_sha256),
        "worker_node_container_runtime": "containerd",
        "worker_node_containerd_files": files,
        "worker_node_containerd_version": CONTAINERD_VERSION,
        "worker_node_cgroup_driver": "cgroupfs",
        "worker_node_sandbox_image": "registry.lab.internal/pause:3.10.2",
        **more,
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


@pytest.mark.parametrize("runtime", ["crio", "containerd"])
def test_check_mode_on_a_fresh_root_reports_the_changes_and_makes_none(
    tmp_path, hyperkube_sha256, containerd_files, runtime
):
    root = _instance(tmp_path, BASE_PACKAGES)
    # A fresh host's package lists are fetched first (the image build does the same), and the apt
    # module needs python3-apt to answer in check mode (a normal run installs it by itself).
    run_in_root(root, ["apt-get", "update", "-qq"], timeout=300)
    run_in_root(root, ["apt-get", "install", "-qq", "-y", "--no-install-recommends", "python3-apt"], timeout=300)
    before = _snapshot(root)
    if runtime == "crio":
        role_vars = _files_vars(str(HYPERKUBE), hyperkube_sha256)
        expected = {"Configure CRI-O for checkpoint and restore with crun and criu"}
    else:
        role_vars = _containerd_vars(hyperkube_sha256, containerd_files)
        expected = {
            "Copy the binaries from the controller for containerd",
            "Configure containerd's CRI plugin for checkpoint and restore with runc and criu",
            "Install the containerd unit",
        }

    run = _apply(tmp_path, root, role_vars, check=True)

    assert run.returncode == 0, run.output[-4000:]
    stats = run.stats("node-1")
    assert stats["failures"] == 0 and stats["changed"] >= 10, stats
    changed = {r["_task"].split(" : ", 1)[-1] for r in run.task_results("node-1") if r.get("changed")}
    assert {"Install the packages", "Copy the binaries from the controller for Kubernetes",
            "Set the sysctls at boot", *expected} <= changed, changed  # fmt: skip
    # What the connection and apt's simulation leave (Ansible's remote tmp, apt's planner log) is no change.
    artefacts = {"+root/.ansible", "+root/.ansible/tmp", "root", "tmp", "var/log/apt", "var/log/apt/eipp.log.xz"}
    assert set(_diff(before, _snapshot(root))) <= artefacts


@pytest.mark.parametrize("pinned", ["kubernetes", "containerd"])
def test_a_binary_that_does_not_match_its_sha256_is_refused_before_anything_changes(
    tmp_path, hyperkube_sha256, containerd_files, pinned
):
    root = _instance(tmp_path, BASE_PACKAGES)
    before = _snapshot(root)
    wrong = hashlib.sha256(b"not the lab's binary").hexdigest()
    if pinned == "kubernetes":
        role_vars, path, actual = _files_vars(str(HYPERKUBE), wrong), HYPERKUBE, hyperkube_sha256
    else:
        # The daemon is wrong, the shim and ctr are right: nothing at all is installed.
        files = [dict(item, sha256=wrong) if item["name"] == "containerd" else item for item in containerd_files]
        role_vars, path = _containerd_vars(hyperkube_sha256, files), CONTAINERD_BIN / "containerd"
        actual = containerd_files[0]["sha256"]

    run = _apply(tmp_path, root, role_vars)

    assert run.returncode != 0
    message = _failed_messages(run)
    assert f"{path} has sha256 {actual}" in message, message
    assert f"expected {wrong}: nothing was installed. Fix the file or its pin in worker_node_{pinned}_files" in message
    assert _diff(before, _snapshot(root)) == []


def test_containerd_without_its_shim_or_with_an_unknown_runtime_is_refused_before_anything_changes(
    tmp_path, hyperkube_sha256, containerd_files
):
    root = _instance(tmp_path, BASE_PACKAGES)
    before = _snapshot(root)

    no_shim = _apply(tmp_path, root, _containerd_vars(hyperkube_sha256, [containerd_files[0]]))
    unknown = _apply(tmp_path, root, {**_files_vars(str(HYPERKUBE), hyperkube_sha256),
                                      "worker_node_container_runtime": "docker"})  # fmt: skip

    assert no_shim.returncode != 0
    assert "must provide containerd and containerd-shim-runc-v2" in _failed_messages(no_shim), no_shim.output[-4000:]
    # The role's argument spec refuses a runtime it does not know, before any task runs.
    assert unknown.returncode != 0
    refused = unknown.output
    assert "worker_node_container_runtime" in refused and "crio, containerd" in refused, refused[-3000:]
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


# Inside the root, with the role's /etc/containerd/config.toml: the merged configuration containerd
# would run with, then the daemon itself on a private socket, root and state under /tmp (a tmpfs of
# this call only), asked through ctr which plugins loaded. Outputs go to /out (a host directory).
CONTAINERD_PROBE = """
set -u
containerd --config /etc/containerd/config.toml config dump >/out/dump.toml 2>/out/dump.err
containerd --config /etc/containerd/config.toml --address /tmp/c/containerd.sock \\
    --root /tmp/c/root --state /tmp/c/state >/out/containerd.log 2>&1 &
daemon=$!
for _ in $(seq 1 300); do [ -S /tmp/c/containerd.sock ] && break; sleep 0.1; done
ctr --address /tmp/c/containerd.sock plugins ls >/out/plugins 2>&1
ctr --address /tmp/c/containerd.sock version >/out/version 2>&1
kill "$daemon"
wait "$daemon"
"""


def _plugin_status(listing: str) -> dict[tuple[str, str], str]:
    """``ctr plugins ls`` as {(type, id): status}."""
    status = {}
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4:
            status[(fields[0], fields[1])] = fields[-1]
    return status


def test_containerd_is_installed_pinned_configured_for_restore_and_starts_in_the_root(
    tmp_path, hyperkube_sha256, containerd_files
):
    """The lab's worker: containerd v2.3.7 with checkpoint restore, runc with cgroupfs, the kubelet beside it."""
    root = _instance(tmp_path, WORKER_PACKAGES)

    # The version pin: the lab's build is 2.3.7, a node pinned to 2.3.6 is refused.
    other = _apply(tmp_path, root, _containerd_vars(hyperkube_sha256, containerd_files,
                                                    worker_node_containerd_version="2.3.6"))  # fmt: skip
    assert other.returncode != 0
    assert "containerd is not at 2.3.6 (containerd github.com/containerd/containerd/v2 v2.3.7" in _failed_messages(
        other
    ), other.output[-4000:]

    run = _apply(tmp_path, root, _containerd_vars(hyperkube_sha256, containerd_files))

    assert run.returncode == 0, run.output[-4000:]
    for item in containerd_files:
        installed = root / "usr/local/bin" / item["name"]
        assert stat.S_IMODE(installed.stat().st_mode) == 0o755
        assert _sha256(installed) == item["sha256"]
    version = run_in_root(root, ["containerd", "--version"], timeout=60).stdout.split()
    assert version[:3] == ["containerd", "github.com/containerd/containerd/v2", f"v{CONTAINERD_VERSION}"], version
    assert run_in_root(root, ["kubelet", "--version"], timeout=60).stdout.strip() == f"Kubernetes v{LAB_VERSION}"

    # The configuration, read as containerd reads it (TOML, config version 3).
    config = tomllib.loads((root / "etc/containerd/config.toml").read_text())
    assert config["version"] == 3 and config["imports"] == ["/etc/containerd/conf.d/*.toml"]
    cri = config["plugins"][CRI_RUNTIME]
    assert cri["enable_criu"] is True and cri["enable_experimental_restore_via_create"] is True, cri
    assert cri["containerd"]["default_runtime_name"] == "runc"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert "/usr/lib/cni" in cri["cni"]["bin_dirs"] and cri["cni"]["conf_dir"] == "/etc/cni/net.d"
    assert config["plugins"]["io.containerd.cri.v1.images"]["pinned_images"] == {
        "sandbox": "registry.lab.internal/pause:3.10.2"
    }
    assert not (root / "etc/crio").exists()
    assert "runtime-endpoint: unix:///run/containerd/containerd.sock" in (root / "etc/crictl.yaml").read_text()
    facts = json.loads((root / "etc/ansible/facts.d/hybridcloud_worker_node.fact").read_text())
    assert facts == {"container_runtime": "containerd", "cri_socket": "unix:///run/containerd/containerd.sock",
                     "cgroup_driver": "cgroupfs", "kubernetes_version": LAB_VERSION}  # fmt: skip

    # The unit: enabled (not started: a chroot), and valid for systemd.
    unit = (root / "etc/systemd/system/containerd.service").read_text()
    assert re.search(r"(?m)^ExecStart=/usr/local/bin/containerd$", unit) and "Delegate=yes" in unit
    enabled = subprocess.run(
        ["systemctl", f"--root={root}", "is-enabled", "containerd.service", "kubelet.service"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert enabled.stdout.split() == ["enabled", "enabled"], enabled
    verify = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "/etc/systemd/system/containerd.service"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # The real containerd, inside the root, with that configuration and a site's drop-in (the lab adds one).
    (root / "etc/containerd/conf.d/90-site.toml").write_text(
        "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\nrestrict_oom_score_adj = true\n"
    )
    out = tmp_path / "probe"
    out.mkdir()
    run_in_root(root, ["sh", "-c", CONTAINERD_PROBE], binds={out: "/out"}, timeout=120)
    log = (out / "containerd.log").read_text()
    dumped = tomllib.loads((out / "dump.toml").read_text())
    running = dumped["plugins"][CRI_RUNTIME]
    assert running["enable_criu"] is True and running["enable_experimental_restore_via_create"] is True, log
    assert running["restrict_oom_score_adj"] is True  # the drop-in, merged key by key
    assert running["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    # The role's runc table is merged into containerd's default one, not put in its place.
    assert running["containerd"]["runtimes"]["runc"]["sandboxer"] == "podsandbox"
    plugins = _plugin_status((out / "plugins").read_text())
    for plugin in [("io.containerd.cri.v1", "runtime"), ("io.containerd.cri.v1", "images"),
                   ("io.containerd.grpc.v1", "cri"), ("io.containerd.snapshotter.v1", "overlayfs")]:  # fmt: skip
        assert plugins.get(plugin) == "ok", f"{plugin}: {plugins.get(plugin)}\n{log[-3000:]}"
    assert f"Version:  v{CONTAINERD_VERSION}" in (out / "version").read_text()
    # The CRI plugin logs the configuration it runs with.
    cri_config = re.search(r'msg="starting cri plugin" config="(.*?[^\\])"', log)
    assert cri_config, log[-3000:]
    cri_running = json.loads(cri_config.group(1).replace('\\"', '"'))
    assert cri_running["enableCRIU"] is True and cri_running["enableExperimentalRestoreViaCreate"] is True
    assert cri_running["restrictOOMScoreAdj"] is True

    again = _apply(tmp_path, root, _containerd_vars(hyperkube_sha256, containerd_files))
    assert again.returncode == 0 and again.stats("node-1")["changed"] == 0, again.output[-4000:]

    # Check mode with the systemd driver reports the configuration change and makes none.
    before = _snapshot(root)
    check = _apply(tmp_path, root, _containerd_vars(hyperkube_sha256, containerd_files,
                                                    worker_node_cgroup_driver="systemd"), check=True)  # fmt: skip
    assert check.returncode == 0, check.output[-4000:]
    changed = {r["_task"].split(" : ", 1)[-1] for r in check.task_results("node-1") if r.get("changed")}
    assert changed == {
        "Configure containerd's CRI plugin for checkpoint and restore with runc and criu",
        "Record the runtime, its CRI socket and the cgroup driver (ansible_local.hybridcloud_worker_node)",
    }, changed
    assert [p for p in _diff(before, _snapshot(root)) if not re.match(r"^\+?(root|tmp)(/\.ansible|$)", p)] == []
