"""The role restore_state and the state part of migrate.yml, with real parts throughout.

- The checkpoint is REAL: the kubelet stand-in (tests/helpers/kubelet_standin.py) dumps a counting
  process in the Debian 13 root with criu 4.1 and lays the archive out like CRI-O, at the path a
  kubelet writes it to; restic 0.18 backs it up into the real S3 server exactly as the node agent
  does (``restic backup --json --host <node> --one-file-system --tag ... <archive path>``).
- The new nodes are private copies of a Debian 13 root reached with the ``community.general.chroot``
  connection, as in the migrate test. One has no CRI-O; the other has buildah 1.39, criu 4.1, restic
  and a real CRI-O settings file enabling checkpoint restore. CRI-O itself is not installed and
  nothing runs a container: CRI-O needs systemd, cgroups and a kubelet this machine cannot give it.
  What CRI-O would read is real, and so is its container storage (/var/lib/containers/storage,
  overlay, the default both CRI-O and buildah use), which the image is built into.
- A chroot has no /proc, and buildah and criu need one; so the playbook for that node runs in a
  mount and pid namespace of its own that mounts proc, sys, dev, tmp and run into the node's root
  (``in_node_namespace``); nothing leaks to the host.
- The image is read back from the node's container storage (``buildah inspect``; ``buildah push``
  to an OCI layout), its layer compared with the archive byte for byte, and the checkpoint taken
  out of the image is restored with ``criu restore``: the counter goes on from its checkpointed value.
- The workload patch runs against the lab's real ``cloud`` API server.
- containerd: a third node has containerd v2.3.7 (lab/build-containerd.sh) with
  ``enable_experimental_restore_via_create = true``, RUNNING in the node's root (its own mount and
  pid namespace, /run shared with the playbook's namespace so ctr reaches its socket). The role
  imports the image into its ``k8s.io`` namespace; the test reads it back with the real ctr as
  containerd's CRI would: the manifest (the image's top-level blob) carries the annotation, the
  snapshot of its one layer, viewed as CRImportCheckpoint views it, holds the archive's files byte
  for byte, and the checkpoint copied out of that view restores with criu (the counter goes on);
  the CRI took the image into its store (its label and image-id reference). No container is
  created through the CRI: nothing here runs a kubelet or a pod sandbox.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.hclab.debian_root import make_instance, run_in_root
from tests.helpers.ansible_run import BIN, REPO, Run, _parse, ansible_env, run_module, run_playbook
from tests.helpers.kubelet_standin import COUNTER_LOG, KubeletStandin
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.integration

PASSWORD = "restic-password-of-the-checkpoints"
NODE = "cloud-worker-9"
CRIO_NODE_PACKAGES = ("python3", "restic", "criu", "buildah", "netavark", "checkpointctl", "mount")
CRIO_DROP_IN = '[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_restore"\n'
ANNOTATION = "io.kubernetes.cri-o.annotations.checkpoint.name"
# containerd 2.2+ looks for checkpointctl's standard name, not CRI-O's.
CONTAINERD_ANNOTATION = "org.criu.checkpoint.container.name"

ROLE_PLAYBOOK = """
- name: Restore the checkpoints on the new node
  hosts: new_nodes
  become: true
  gather_facts: false
  tasks:
    - name: Run the role
      ansible.builtin.include_role:
        name: hybridcloud.migration.restore_state
    - name: Show the results
      ansible.builtin.debug:
        var: restore_state_results
"""

# Mounts what a real node has and a chroot lacks, in a namespace of this run only.
NODE_NAMESPACE = r"""
set -eu
root=$1
shift
mount --make-rprivate /
# The root a mount of its own, so that inside the chroot "/" is a mount with the others below it
# (criu check reads /proc/self/mountinfo and wants every mount's parent there).
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmp "$root/tmp"
if [ -n "${NODE_RUN:-}" ]; then  # a /run shared with another namespace of this node (its containerd)
    mount --bind "$NODE_RUN" "$root/run"
else
    mount -t tmpfs -o mode=755 run "$root/run"
fi
exec "$@"
"""

# The checkpoint taken out of the image: its rootfs diff in place, then criu restore (as
# test_node_backup_agent does with the archive itself).
RESTORE_SCRIPT = r"""
set -eu
tar -C / -xf /tmp/archive/rootfs-diff.tar
echo "dumped=$(tr '\n' ' ' <"$LOG")"
if ! criu restore -D /tmp/archive/checkpoint -d -o /tmp/restore.log -v4; then
    echo "restore_failed=yes"; tail -n 40 /tmp/restore.log; exit 1
fi
n=$(wc -l <"$LOG")
until [ "$(wc -l <"$LOG")" -ge $((n + 5)) ]; do sleep 0.05; done
echo "final=$(tr '\n' ' ' <"$LOG")"
"""


def node_namespace(root: Path, *argv: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            "sh", "-c", NODE_NAMESPACE, "sh", str(root), *argv]


def in_node_namespace(root: Path, playbook: Path, inventory: Path, extra_vars: dict[str, Any], check: bool = False,
                      run_dir: Path | None = None) -> Run:
    argv = node_namespace(root, str(BIN / "ansible-playbook"), str(playbook), "-i", str(inventory),
                          "-e", json.dumps(extra_vars)) + (["--check"] if check else [])
    env = ansible_env({"NODE_RUN": str(run_dir)} if run_dir else None)
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr, _parse(proc.stdout))


def results(run: Run) -> list[dict[str, Any]]:
    shown = [r for r in run.task_results(NODE) if "restore_state_results" in r]
    assert shown, run.output[-4000:]
    found: list[dict[str, Any]] = shown[-1]["restore_state_results"]
    return found


def failures(run: Run) -> str:
    return "\n".join(str(r.get("msg", r)) for r in run.task_results(NODE) if r.get("failed"))


def ran(run: Run, task: str) -> list[dict[str, Any]]:
    """Results of the role's task ``task`` that did run (not skipped)."""
    return [r for r in run.task_results(NODE) if r["_task"] in (task, "hybridcloud.migration.restore_state : " + task) and not r.get("skipped")]


def inventory(where: Path, root: Path) -> Path:
    path = where / f"inventory-{root.name}.json"
    path.write_text(json.dumps({"all": {"children": {"new_nodes": {"hosts": {NODE: {
        "ansible_connection": "community.general.chroot", "ansible_host": str(root), "ansible_python_interpreter": "/usr/bin/python3"}}}}}}))
    return path


@pytest.fixture(scope="module")
def checkpoint(debian_root: Path, s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real checkpoint of a counter, backed up with restic as the node agent does, and the plan items naming it."""
    workdir = tmp_path_factory.mktemp("restore-state")
    namespace = f"hcm-state-{uuid.uuid4().hex[:6]}"
    kubelet = KubeletStandin(debian_root, workdir / "kubelet", node_name="worker-1")
    try:
        container = kubelet.add_container(namespace, "counter-0", "counter")
        wait_until("the counter has counted", lambda: len(container.read_file(COUNTER_LOG).split()) >= 5, 30)
        archive = kubelet.checkpoint(container, 60)
        pid = container.workload_pid
    finally:
        kubelet.stop()
    archive_bytes = archive.read_bytes()
    bucket = s3_server.create_bucket(f"state-{uuid.uuid4().hex[:8]}")
    repository = f"s3:{s3_server.endpoint_url}/{bucket}/restic/onprem"
    restic = str(debian_root / "usr/bin/restic")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=s3_server.access_key, AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
               AWS_DEFAULT_REGION=s3_server.region, RESTIC_PASSWORD=PASSWORD, RESTIC_REPOSITORY=repository, HOME=str(workdir))
    subprocess.run([restic, "init"], env=env, check=True, capture_output=True)
    taken = subprocess.run([restic, "backup", "--json", "--host", "worker-1", "--one-file-system", "--tag", "hcm", "--tag", "kind=workload_state",
                            "--tag", f"ns={namespace}", "--tag", "pod=counter-0", "--tag", "container=counter", str(archive)],
                           env=env, check=True, capture_output=True, text=True)
    snapshot = [json.loads(line) for line in taken.stdout.splitlines() if '"summary"' in line][-1]["snapshot_id"]
    archive.unlink()  # as the agent does: the archive leaves the node

    def item(workload: str, replicas: int) -> dict[str, Any]:
        # As migration_plan.attach_node_backup passes it on (catalog artifact + target_node, workload, container).
        return {"name": f"{namespace}/counter-0/counter" if replicas == 1 else f"{namespace}/{workload}-0/counter",
                "location": f"restic:{repository}#{snapshot}", "size": len(archive_bytes),
                "details": {"namespace": namespace, "pod": "counter-0", "container": "counter", "archive": archive.name,
                            "snapshot_id": snapshot},
                "target_node": NODE, "workload": {"kind": "Deployment", "namespace": namespace, "name": workload},
                "container": "counter", "replicas": replicas}

    yield {"namespace": namespace, "snapshot": snapshot, "repository": repository, "archive": archive, "bytes": archive_bytes,
           "pid": pid, "items": [item("counter", 1), item("web", 2)], "workdir": workdir,
           "image": f"localhost/hcm-checkpoint/{namespace}-counter-0-counter:{snapshot[:12]}"}


def settings(checkpoint: dict[str, Any], s3_server: Any, **over: Any) -> dict[str, Any]:
    return {"restore_state_items": checkpoint["items"], "restore_state_restic_password": PASSWORD,
            "restore_state_s3_access_key": s3_server.access_key, "restore_state_s3_secret_key": s3_server.secret_key,
            "restore_state_s3_region": s3_server.region, "restore_state_install_packages": False, **over}


@pytest.fixture(scope="module")
def crio_node(checkpoint: dict[str, Any], s3_server: Any) -> dict[str, Any]:
    """A node whose CRI-O settings enable checkpoint restore, after the role ran on it once (and again)."""
    workdir = checkpoint["workdir"]
    root = make_instance(workdir / "crio-node", CRIO_NODE_PACKAGES)
    (root / "etc/crio/crio.conf.d").mkdir(parents=True)
    (root / "etc/crio/crio.conf.d/10-checkpoint-restore.conf").write_text(CRIO_DROP_IN)
    playbook = workdir / "restore_state.yml"
    playbook.write_text(ROLE_PLAYBOOK)
    hosts = inventory(workdir, root)
    checked = in_node_namespace(root, playbook, hosts, settings(checkpoint, s3_server), check=True)
    written = [root / "var/lib/containers", root / "var/lib/hybridcloud-migration", root / "etc/hybridcloud-migration"]
    after_check = sorted(str(p.relative_to(root)) for p in written if p.exists())
    first = in_node_namespace(root, playbook, hosts, settings(checkpoint, s3_server))
    again = in_node_namespace(root, playbook, hosts, settings(checkpoint, s3_server))
    return {"root": root, "playbook": playbook, "inventory": hosts, "checked": checked, "after_check": after_check, "first": first, "again": again}


def buildah(root: Path, *args: str, binds: dict[Path, str] | None = None) -> str:
    done = run_in_root(root, ["buildah", *args], binds=binds, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- the module that decides ----------------------------------------------------------------


def test_checkpoint_runtime_info_reads_crios_files_in_its_order_and_never_fails_for_a_no(tmp_path):
    base = {"node": NODE, "crio_config": str(tmp_path / "crio.conf"), "crio_config_dir": str(tmp_path / "crio.conf.d"),
            "crio_binary": "", "criu_binary": "no-such-criu"}
    none = run_module("checkpoint_runtime_info", base)
    assert not none.get("failed") and none["supported"] is False and none["sources"] == [], none
    assert none["reason"].startswith(f"node {NODE} has no CRI-O") and none["criu"] == {"path": "", "version": "", "check_rc": None}

    (tmp_path / "crio.conf").write_text('[crio]\nroot = "/srv/containers"\n[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_only"\n')
    (tmp_path / "crio.conf.d").mkdir()
    (tmp_path / "crio.conf.d/50-restore.conf").write_text(CRIO_DROP_IN)
    enabled = run_module("checkpoint_runtime_info", base)
    assert enabled["mode"] == "checkpoint_restore" and enabled["storage"]["root"] == "/srv/containers", enabled
    assert enabled["supported"] is False and "no criu: install criu" in enabled["reason"], enabled  # criu is what is missing now

    (tmp_path / "crio.conf.d/60-broken.conf").write_text("[crio.runtime\n")
    broken = run_module("checkpoint_runtime_info", base)
    assert broken.get("failed") and "60-broken.conf is not valid TOML" in broken["msg"] and "Fix:" in broken["msg"], broken


# -- (a) a node that cannot restore -------------------------------------------------------


def test_a_node_without_crio_checkpoint_restore_starts_every_container_cold_and_builds_nothing(checkpoint, s3_server, tmp_path):
    root = make_instance(tmp_path / "plain-node", ("python3", "restic"))  # the migrate test's new node
    playbook = tmp_path / "restore_state.yml"
    playbook.write_text(ROLE_PLAYBOOK)
    run = run_playbook(playbook, inventory=inventory(tmp_path, root), extra_vars=settings(checkpoint, s3_server))
    assert run.returncode == 0, failures(run) or run.output[-3000:]
    found = results(run)
    assert [(r["name"], r["outcome"], r["image"]) for r in found] == [(i["name"], "cold-start", "") for i in checkpoint["items"]]
    for result in found:
        assert result["reason"].startswith(f"node {NODE} has no CRI-O (no /etc/crio/crio.conf"), result
        assert 'container_level_enabled = "checkpoint_restore"' in result["reason"] and "worker_node role" in result["reason"]
        assert result["snapshot"] == checkpoint["snapshot"]
    assert not (root / "var/lib/hybridcloud-migration").exists() and not (root / "var/lib/containers").exists()
    assert not (root / "etc/hybridcloud-migration").exists()
    assert run.stats(NODE)["changed"] == 0

    # CRI-O present but at its default (checkpoint_only): cold as well, and the reason says so.
    (root / "etc/crio/crio.conf.d").mkdir(parents=True)
    (root / "etc/crio/crio.conf.d/10-checkpoint.conf").write_text('[crio.checkpoint_restore]\ncontainer_level_enabled = "checkpoint_only"\n')
    only = run_playbook(playbook, inventory=inventory(tmp_path, root), extra_vars=settings(checkpoint, s3_server))
    assert only.returncode == 0, failures(only)
    assert {r["outcome"] for r in results(only)} == {"cold-start"}
    assert "container_level_enabled = 'checkpoint_only'" in results(only)[0]["reason"], results(only)[0]


# -- (b) a node that can: the image, read back, restores the process -----------------------


def test_check_mode_says_what_would_be_built_and_changes_nothing(crio_node, checkpoint):
    checked = crio_node["checked"]
    assert checked.returncode == 0, failures(checked) or checked.output[-3000:]
    [counter, web] = results(checked)
    assert counter["outcome"] == "restored-image" and counter["detail"] == "check mode: the image would be built", counter
    assert counter["image"] == checkpoint["image"]
    assert web["outcome"] == "cold-start"
    assert crio_node["after_check"] == [], crio_node["after_check"]


def test_the_checkpoint_becomes_an_image_in_crios_storage_holding_the_archive(crio_node, checkpoint, debian_root):
    first = crio_node["first"]
    assert first.returncode == 0, failures(first) or first.output[-3000:]
    root = crio_node["root"]
    [counter, web] = results(first)
    assert counter == {"name": checkpoint["items"][0]["name"], "outcome": "restored-image", "image": checkpoint["image"],
                       "snapshot": checkpoint["snapshot"], "reason": "", "detail": f"built from {checkpoint['archive'].name}",
                       "workload": checkpoint["items"][0]["workload"], "container": "counter", "target_node": NODE, "replicas": 1}
    # Two replicas would share one checkpoint: nothing restored or built for it.
    assert web["outcome"] == "cold-start" and web["image"] == "" and web["reason"].startswith("2 replicas would share one checkpoint"), web
    assert len(ran(first, "Restore the archive with restic")) == 1 and len(ran(first, "Start from scratch")) == 1
    # criu (like runc and crun through its RPC) writes no cpuinfo.img unless asked to (--cpu-cap):
    # then there is nothing to compare before the build, and criu restore checks the FPU itself.
    with tarfile.open(fileobj=io.BytesIO(checkpoint["bytes"]), mode="r:") as tar:
        has_cpuinfo = "checkpoint/cpuinfo.img" in tar.getnames()
    assert len(ran(first, "Compare this CPU with the checkpoint's")) == (1 if has_cpuinfo else 0)

    # Nothing secret or heavy stays behind: no password file, no archive copy (every memory page).
    assert not (root / "etc/hybridcloud-migration/restore-state-restic-password").exists()
    assert not any((root / "var/lib/hybridcloud-migration/checkpoint-work").iterdir())
    assert PASSWORD not in first.output
    [marker] = (root / "var/lib/hybridcloud-migration/checkpoints").iterdir()
    assert json.loads(marker.read_text())["snapshot"] == checkpoint["snapshot"] and oct(marker.stat().st_mode & 0o777) == "0o600"

    # The image, read back from the node's container storage (the overlay storage CRI-O reads).
    inspected = json.loads(buildah(root, "inspect", "--type", "image", checkpoint["image"]))
    assert inspected["ImageAnnotations"][ANNOTATION] == "counter", inspected["ImageAnnotations"]
    assert json.loads(inspected["Manifest"])["annotations"][ANNOTATION] == "counter"
    assert (root / "var/lib/containers/storage/overlay-images").is_dir()
    assert "localhost/hcm-checkpoint/" in buildah(root, "images")

    # Its one layer holds exactly the archive's files, byte for byte.
    oci = crio_node["root"].parent / "oci"
    oci.mkdir()
    buildah(crio_node["root"], "push", checkpoint["image"], "oci:/tmp/oci:checkpoint", binds={oci: "/tmp/oci"})
    index = json.loads((oci / "index.json").read_text())
    manifest = json.loads(blob(oci, index["manifests"][0]["digest"]))
    [layer] = manifest["layers"]
    assert manifest["annotations"][ANNOTATION] == "counter"
    in_image = members(tarfile.open(fileobj=open_blob(oci, layer["digest"]), mode="r:*"))
    in_archive = members(tarfile.open(fileobj=io.BytesIO(checkpoint["bytes"]), mode="r:"))
    assert in_image == in_archive and len(in_archive) > 5, sorted(set(in_image) ^ set(in_archive))
    assert {"config.dump", "spec.dump", "rootfs-diff.tar", "checkpoint/pstree.img", "checkpoint/inventory.img"} <= set(in_image)

    # The strongest check: the checkpoint taken out of the image restores, and the counter goes on.
    opened = crio_node["root"].parent / "from-image"
    with tarfile.open(fileobj=open_blob(oci, layer["digest"]), mode="r:*") as tar:
        tar.extractall(opened, filter="tar")
    assert_the_counter_resumes(debian_root, opened)


def assert_the_counter_resumes(debian_root: Path, opened: Path) -> None:
    """criu restores the checkpoint in ``opened`` (an archive's contents) and the counter goes on from its value."""
    # In the root the counter ran and was dumped in: criu restores the very binaries it mapped.
    restored = run_in_root(debian_root, ["sh", "-c", RESTORE_SCRIPT], binds={opened: "/tmp/archive"},
                           env={"LOG": COUNTER_LOG}, timeout=120, check=False)
    out = dict(line.split("=", 1) for line in restored.stdout.splitlines() if "=" in line)
    context = f"rc={restored.returncode}\n{restored.stdout}\n{restored.stderr}"
    assert restored.returncode == 0 and "final" in out, context
    dumped = [int(x) for x in out["dumped"].split()]
    final = [int(x) for x in out["final"].split()]
    assert len(dumped) >= 5 and dumped == list(range(1, len(dumped) + 1)), context
    resumed = final[len(dumped):]
    # From the value it held in memory at the checkpoint: dumped + 1, + 2, ... (a fresh start would write 1).
    assert final[: len(dumped)] == dumped and len(resumed) >= 5, context
    assert resumed == list(range(dumped[-1] + 1, dumped[-1] + 1 + len(resumed))), context


def blob(oci: Path, digest: str) -> bytes:
    return (oci / "blobs" / digest.replace(":", "/")).read_bytes()


def open_blob(oci: Path, digest: str) -> Any:
    return open(oci / "blobs" / digest.replace(":", "/"), "rb")  # pylint: disable=consider-using-with


def members(tar: tarfile.TarFile) -> dict[str, str]:
    """Each regular file's sha256, by path (leading ./ and / dropped)."""
    found = {}
    with tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                found[member.name.lstrip("./").lstrip("/")] = hashlib.sha256(handle.read()).hexdigest()
    return found


# -- (b2) the CPU check ------------------------------------------------------------------------
# criu writes cpuinfo.img only when asked (criu cpuinfo dump, or dump --cpu-cap); CRI-O's archives
# usually have none. These archives add one: this CPU's, and one claiming every x86 capability bit.


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _enc_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    i, out = 0, []
    while i < len(buf):
        tag, i = _varint(buf, i)
        if tag & 7 == 0:
            value, i = _varint(buf, i)
        else:  # length-delimited (the only other wire type in cpuinfo.img)
            length, i = _varint(buf, i)
            value, i = buf[i:i + length], i + length
        out.append((tag >> 3, tag & 7, value))
    return out


def _encode(items: list[tuple[int, int, Any]]) -> bytes:
    return b"".join(_enc_varint(n << 3 | w) + (_enc_varint(v) if w == 0 else _enc_varint(len(v)) + v) for n, w, v in items)


def foreign_cpu(image: bytes) -> bytes:
    """cpuinfo.img (magic, size, CpuinfoEntry) with every capability word of its x86 entry (field 6) all ones."""
    size = int.from_bytes(image[8:12], "little")
    top = _fields(image[12:12 + size])
    x86 = [(n, w, 0xFFFFFFFF if n == 6 else v) for n, w, v in _fields(top[0][2])]
    entry = _encode([(1, 2, _encode(x86))] + top[1:])
    return image[:8] + len(entry).to_bytes(4, "little") + entry + image[12 + size:]


def with_cpuinfo(archive: bytes, cpuinfo: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as source, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in source.getmembers():
            tar.addfile(member, source.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("checkpoint/cpuinfo.img")
        info.size, info.mode = len(cpuinfo), 0o600
        tar.addfile(info, io.BytesIO(cpuinfo))
    return out.getvalue()


def test_the_cpu_check_builds_for_this_cpu_and_starts_a_foreign_cpus_checkpoint_cold(crio_node, checkpoint, debian_root, s3_server, tmp_path):
    dumped = tmp_path / "cpuinfo"
    dumped.mkdir()
    run_in_root(debian_root, ["criu", "cpuinfo", "dump", "-D", "/tmp/out"], binds={dumped: "/tmp/out"}, timeout=60)
    this_cpu = (dumped / "cpuinfo.img").read_bytes()
    kubelet_dir = tmp_path / "var/lib/kubelet/checkpoints"
    kubelet_dir.mkdir(parents=True)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=s3_server.access_key, AWS_SECRET_ACCESS_KEY=s3_server.secret_key, AWS_DEFAULT_REGION=s3_server.region,
               RESTIC_PASSWORD=PASSWORD, RESTIC_REPOSITORY=checkpoint["repository"], HOME=str(tmp_path))
    items = []
    for pod, cpuinfo in (("same-cpu-0", this_cpu), ("other-cpu-0", foreign_cpu(this_cpu))):
        archive = kubelet_dir / f"checkpoint-{pod}_{checkpoint['namespace']}-counter-2026-01-01T00:00:00Z.tar"
        archive.write_bytes(with_cpuinfo(checkpoint["bytes"], cpuinfo))
        taken = subprocess.run([str(debian_root / "usr/bin/restic"), "backup", "--json", "--host", "worker-1", str(archive)],
                               env=env, check=True, capture_output=True, text=True)
        snapshot = [json.loads(line) for line in taken.stdout.splitlines() if '"summary"' in line][-1]["snapshot_id"]
        items.append(dict(checkpoint["items"][0], name=f"{checkpoint['namespace']}/{pod}/counter", location=f"restic:{checkpoint['repository']}#{snapshot}",
                          details=dict(checkpoint["items"][0]["details"], pod=pod, archive=archive.name),
                          workload=dict(checkpoint["items"][0]["workload"], name=pod[:-2])))
    run = in_node_namespace(crio_node["root"], crio_node["playbook"], crio_node["inventory"], settings(checkpoint, s3_server, restore_state_items=items))
    assert run.returncode == 0, failures(run) or run.output[-3000:]
    same, other = results(run)
    assert [c["rc"] for c in ran(run, "Compare this CPU with the checkpoint's")] == [0, 1]
    assert same["outcome"] == "restored-image" and same["image"].endswith(items[0]["location"][-64:][:12]), same
    assert other["outcome"] == "cold-start" and other["image"] == "", other
    assert other["reason"].startswith(f"node {NODE}'s CPU lacks features the checkpointed process used"), other
    assert "CPU instruction capabilities do not match run time" in other["reason"], other
    assert len(ran(run, "Start from scratch")) == 1  # built for the same CPU only
    listed = buildah(crio_node["root"], "images", "--format", "{{.Name}}")
    assert f"{checkpoint['namespace']}-same-cpu-0-counter" in listed and "other-cpu-0" not in listed, listed
    assert not any((crio_node["root"] / "var/lib/hybridcloud-migration/checkpoint-work").iterdir())


# -- (c) a second run builds nothing ---------------------------------------------------------


def test_a_second_run_changes_nothing_and_builds_nothing(crio_node, checkpoint):
    again = crio_node["again"]
    assert again.returncode == 0, failures(again) or again.output[-3000:]
    assert again.stats(NODE)["changed"] == 0, [r["_task"] for r in again.task_results(NODE) if r.get("changed")]
    assert not ran(again, "Restore the archive with restic") and not ran(again, "Start from scratch")
    [counter, web] = results(again)
    assert counter["outcome"] == "restored-image" and counter["image"] == checkpoint["image"]
    assert counter["detail"].startswith("built by an earlier run (image id "), counter
    assert web["outcome"] == "cold-start"


# -- (d) what goes wrong says how to fix it ---------------------------------------------------


def test_a_wrong_password_fails_naming_the_fix_and_leaves_no_secret(crio_node, checkpoint, s3_server):
    root = crio_node["root"]
    fresh = [dict(checkpoint["items"][0], name=checkpoint["items"][0]["name"] + "-again")]  # no marker yet
    failed = in_node_namespace(root, crio_node["playbook"], crio_node["inventory"],
                               settings(checkpoint, s3_server, restore_state_items=fresh, restore_state_restic_password="not-it"))
    assert failed.returncode != 0
    said = failures(failed)
    assert f"Restoring the checkpoint {fresh[0]['name']} (snapshot {checkpoint['snapshot']}" in said, said
    assert "wrong password" in said and "restore_state_restic_password" in said, said
    assert not (root / "etc/hybridcloud-migration/restore-state-restic-password").exists()
    assert not any((root / "var/lib/hybridcloud-migration/checkpoint-work").iterdir())
    assert "not-it" not in failed.output.replace('"restore_state_restic_password": "not-it"', "")


def test_a_snapshot_that_is_gone_fails_naming_the_fix(crio_node, checkpoint, s3_server):
    gone = "0123456789abcdef" * 4
    item = dict(checkpoint["items"][0], name="pruned/counter-0/counter", location=f"restic:{checkpoint['repository']}#{gone}")
    failed = in_node_namespace(crio_node["root"], crio_node["playbook"], crio_node["inventory"],
                               settings(checkpoint, s3_server, restore_state_items=[item]))
    assert failed.returncode != 0
    said = failures(failed)
    assert f"Restoring the checkpoint pruned/counter-0/counter (snapshot {gone}" in said, said
    assert "no matching ID" in said and "take a new node backup" in said, said


# -- (e) the workload runs from the image, on the new node -----------------------------------


SITE_PLAYBOOK = """
- name: The state part of finish.yml on the target site
  hosts: localhost
  gather_facts: false
  vars_files:
    - {variables}  # not -e: extra vars would win over the facts the tasks set
  tasks:
    - name: The state tasks of migrate.yml
      ansible.builtin.import_tasks: {tasks}
    - name: Show the outcome
      ansible.builtin.debug:
        msg: "{{{{ {{'results': hcm_state_results, 'phases': hcm_phases, 'failed': hcm_failed}} }}}}"
"""


def test_the_workload_is_pointed_at_the_image_on_the_new_node_and_two_replicas_are_left_alone(lab, crio_node, checkpoint, tmp_path):
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    apps, core = client.AppsV1Api(lab.api("cloud")), client.CoreV1Api(lab.api("cloud"))
    namespace = checkpoint["namespace"]
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        # As ordered_restore leaves them before the scale-up: 0 replicas, the plan's count in an annotation;
        # "running" was scaled up by an earlier run already.
        for name, replicas, held in (("counter", 1, True), ("web", 2, True), ("running", 1, False)):
            apps.create_namespaced_deployment(namespace, {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "annotations": {"migration.hybridcloud.io/replicas": str(replicas)} if held else {}},
                "spec": {"replicas": 0 if held else replicas, "selector": {"matchLabels": {"app": name}}, "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "counter", "image": "registry.example/hcm/counter:1.0"},
                                            {"name": "sidecar", "image": "registry.example/hcm/sidecar:1.0"}]}}}})
        playbook, site_vars = tmp_path / "site.yml", tmp_path / "site-vars.json"
        playbook.write_text(SITE_PLAYBOOK.format(tasks=REPO / "playbooks/migrate/tasks/state_workloads.yml", variables=site_vars))
        node_results = results(crio_node["first"])
        running = dict(checkpoint["items"][0], name=f"{namespace}/running-0/counter", workload=dict(checkpoint["items"][0]["workload"], name="running"))
        node_results.append(dict(node_results[0], name=running["name"], workload=running["workload"]))
        variables = {"hcm_failed": False, "hcm_target_kubeconfig": str(lab.kubeconfig("cloud")), "hcm_time_format": "%Y-%m-%dT%H:%M:%S.%fZ",
                     "hcm_state_node_results": node_results, "hcm_migration": {"plan": {"workload_state": checkpoint["items"] + [running]}},
                     "hcm_phases": [{"name": "data", "status": "ok", "finished_at": "2026-01-01T00:00:00.000000Z"}]}
        site_vars.write_text(json.dumps(variables))
        run = run_playbook(playbook)
        assert run.returncode == 0, [r.get("msg") for r in run.task_results() if r.get("failed")]
        shown = [r for r in run.task_results() if r["_task"] == "Show the outcome"][0]["msg"]

        counter = apps.read_namespaced_deployment("counter", namespace).spec.template.spec
        by_name = {c.name: c for c in counter.containers}
        assert (by_name["counter"].image, by_name["counter"].image_pull_policy) == (checkpoint["image"], "Never")
        assert by_name["sidecar"].image == "registry.example/hcm/sidecar:1.0"  # the other container keeps its image
        assert counter.node_selector == {"kubernetes.io/hostname": NODE}
        web = apps.read_namespaced_deployment("web", namespace).spec.template.spec
        assert [c.image for c in web.containers] == ["registry.example/hcm/counter:1.0", "registry.example/hcm/sidecar:1.0"]
        assert not web.node_selector
        alive = apps.read_namespaced_deployment("running", namespace).spec.template.spec
        assert alive.containers[0].image == "registry.example/hcm/counter:1.0" and not alive.node_selector

        assert not shown["failed"] and shown["phases"][-1]["name"] == "state" and shown["phases"][-1]["status"] == "ok"
        outcomes = {r["name"]: r for r in shown["results"]}
        assert outcomes[checkpoint["items"][0]["name"]]["outcome"] == "restored"
        assert checkpoint["image"] in outcomes[checkpoint["items"][0]["name"]]["reason"]
        assert outcomes[checkpoint["items"][1]["name"]]["outcome"] == "cold-start"
        assert outcomes[checkpoint["items"][1]["name"]]["reason"].startswith("2 replicas would share one checkpoint")
        assert outcomes[running["name"]]["outcome"] == "cold-start"
        assert "is not held at 0 replicas on the target (scaled up by an earlier run" in outcomes[running["name"]]["reason"]

        again = run_playbook(playbook)  # patching again changes nothing
        assert again.returncode == 0 and not [r for r in again.task_results() if r.get("changed") and r["_task"].startswith("Set the")]

        # A re-run of migrate.yml applies the plan's resources again: the counter stays on its checkpoint image.
        planned = {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "counter", "namespace": namespace, "annotations": {"migration.hybridcloud.io/replicas": "1"}},
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "counter"}}, "template": {
                       "metadata": {"labels": {"app": "counter"}},
                       "spec": {"containers": [{"name": "counter", "image": "registry.example/hcm/counter:1.0", "imagePullPolicy": "IfNotPresent"},
                                               {"name": "sidecar", "image": "registry.example/hcm/sidecar:1.0"}]}}}}
        reapplied = run_module("ordered_restore", {"kubeconfig": str(lab.kubeconfig("cloud")), "wait": False,
                                                   "plan": {"schema": 1, "run_id": namespace, "stages": [{"name": "workloads", "objects": [planned]}]}})
        assert not reapplied.get("failed"), reapplied.run.output
        assert "runs from its checkpoint image: counter=" in reapplied["objects"][0]["note"], reapplied["objects"]
        counter = apps.read_namespaced_deployment("counter", namespace).spec.template.spec
        by_name = {c.name: c for c in counter.containers}
        assert (by_name["counter"].image, by_name["counter"].image_pull_policy) == (checkpoint["image"], "Never")
        assert counter.node_selector == {"kubernetes.io/hostname": NODE}
    finally:
        core.delete_namespace(namespace)


# -- (f) containerd: the image in its k8s.io namespace, unpacked ---------------------------------

CONTAINERD_BIN = REPO / ".build/lab/containerd/bin"
CONTAINERD_CONFIG = "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_experimental_restore_via_create = true\n"


@pytest.fixture(scope="module")
def containerd_bin() -> Path:
    """lab/build-containerd.sh's containerd, shim and ctr (built once per version, then only linked)."""
    subprocess.run(["bash", str(REPO / "lab/build-containerd.sh")], check=True, timeout=3600, capture_output=True)
    assert (CONTAINERD_BIN / "containerd").is_file() and (CONTAINERD_BIN / "ctr").is_file()
    return CONTAINERD_BIN


class Ctr:
    """The real ctr, from the host, on the node's containerd socket, namespace k8s.io."""

    def __init__(self, binary: Path, socket: Path) -> None:
        self.binary, self.socket = binary, socket

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.binary), "--address", str(self.socket), "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0 or not check, done.stderr
        return done

    def blob(self, digest: str) -> bytes:
        done = subprocess.run([str(self.binary), "--address", str(self.socket), "--namespace", "k8s.io", "content", "get", digest],
                              capture_output=True, timeout=120, check=True)
        assert hashlib.sha256(done.stdout).hexdigest() == digest.split(":", 1)[1]
        return done.stdout

    def images(self) -> dict[str, list[str]]:
        """``ctr images check``: each image's REF TYPE DIGEST STATUS ... UNPACKED fields, by name."""
        lines = self.run("images", "check").stdout.splitlines()[1:]
        return {line.split()[0]: line.split() for line in lines if line.strip()}


@pytest.fixture(scope="module")
def containerd_node(checkpoint: dict[str, Any], s3_server: Any, containerd_bin: Path) -> Iterator[dict[str, Any]]:
    """A node running containerd 2.3 with restore via create enabled, after the role ran on it (check, first, again)."""
    workdir = checkpoint["workdir"]
    root = make_instance(workdir / "containerd-node", CRIO_NODE_PACKAGES)
    for tool in ("containerd", "containerd-shim-runc-v2", "ctr"):
        (root / "usr/local/bin" / tool).write_bytes((containerd_bin / tool).read_bytes())
        (root / "usr/local/bin" / tool).chmod(0o755)
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(CONTAINERD_CONFIG)
    run_dir = workdir / "containerd-run"
    run_dir.mkdir()
    log = (workdir / "containerd.log").open("w")
    daemon = subprocess.Popen(  # pylint: disable=consider-using-with  # stopped below
        node_namespace(root, "chroot", str(root), "/usr/local/bin/containerd", "--config", "/etc/containerd/config.toml"),
        env=dict(os.environ, NODE_RUN=str(run_dir)), stdout=log, stderr=subprocess.STDOUT)
    ctr = Ctr(containerd_bin / "ctr", run_dir / "containerd/containerd.sock")
    try:
        wait_until("containerd answers", lambda: daemon.poll() is None and ctr.run("version", check=False).returncode == 0, 30)
        playbook = workdir / "restore_state.yml"
        playbook.write_text(ROLE_PLAYBOOK)
        hosts = inventory(workdir, root)
        written = [root / "var/lib/hybridcloud-migration", root / "etc/hybridcloud-migration"]
        checked = in_node_namespace(root, playbook, hosts, settings(checkpoint, s3_server), check=True, run_dir=run_dir)
        after_check = {"files": sorted(str(p.relative_to(root)) for p in written if p.exists()), "images": ctr.images()}
        first = in_node_namespace(root, playbook, hosts, settings(checkpoint, s3_server), run_dir=run_dir)
        again = in_node_namespace(root, playbook, hosts, settings(checkpoint, s3_server), run_dir=run_dir)
        yield {"root": root, "playbook": playbook, "inventory": hosts, "run_dir": run_dir, "ctr": ctr, "checked": checked,
               "after_check": after_check, "first": first, "again": again}
    finally:
        daemon.kill()  # unshare --kill-child takes containerd and its mounts with it
        daemon.wait(30)
        log.close()
        print((workdir / "containerd.log").read_text()[-3000:])


def runtime_said(run: Run) -> dict[str, Any]:
    [said] = ran(run, "Read the runtime's settings (CRI-O or containerd) and check criu")
    return said


def test_containerd_check_mode_says_what_would_be_imported_and_changes_nothing(containerd_node, checkpoint):
    checked = containerd_node["checked"]
    assert checked.returncode == 0, failures(checked) or checked.output[-3000:]
    said = runtime_said(checked)
    assert (said["runtime"], said["supported"], said["mode"]) == ("containerd", True, "restore_via_create"), said
    [counter, web] = results(checked)
    assert counter["outcome"] == "restored-image" and counter["detail"] == "check mode: the image would be built", counter
    assert web["outcome"] == "cold-start"
    assert containerd_node["after_check"] == {"files": [], "images": {}}, containerd_node["after_check"]


def test_the_checkpoint_becomes_an_unpacked_image_in_containerds_k8s_io_namespace(containerd_node, checkpoint, debian_root):
    first, ctr, root = containerd_node["first"], containerd_node["ctr"], containerd_node["root"]
    assert first.returncode == 0, failures(first) or first.output[-3000:]
    said = runtime_said(first)
    assert said["runtime"] == "containerd" and said["sources"] == ["containerd config dump"], said
    assert said["containerd"]["address"] == "/run/containerd/containerd.sock" and said["containerd"]["ctr"] == "/usr/local/bin/ctr"
    assert said["containerd"]["snapshotter"] == "overlayfs" and "v2.3.7" in said["containerd"]["version"], said["containerd"]
    [counter, web] = results(first)
    assert (counter["outcome"], counter["image"]) == ("restored-image", checkpoint["image"]), counter
    assert counter["detail"] == "built from " + checkpoint["archive"].name and web["outcome"] == "cold-start"
    assert len(ran(first, "Import it into containerd, unpacked")) == 1 and first.stats(NODE)["changed"] > 0

    # In containerd's k8s.io namespace under the role's name: complete, unpacked, with the digest the marker records.
    listed = ctr.images()
    assert checkpoint["image"] in listed, listed
    fields = listed[checkpoint["image"]]
    [marker] = (root / "var/lib/hybridcloud-migration/checkpoints").iterdir()
    recorded = json.loads(marker.read_text())
    assert (recorded["runtime"], recorded["snapshot"], recorded["digest"]) == ("containerd", checkpoint["snapshot"], fields[2]), recorded
    assert fields[3] == "complete" and fields[-1] == "true", fields
    assert checkpoint["image"] in ctr.run("images", "ls", "-q").stdout.split()

    # What checkIfCheckpointOCIImage reads: the image's top-level blob, as an OCI index, has the annotation.
    manifest = json.loads(ctr.blob(fields[2]))
    assert manifest["annotations"][ANNOTATION] == manifest["annotations"][CONTAINERD_ANNOTATION] == "counter", manifest
    [layer] = manifest["layers"]

    # containerd's CRI took it into its image store (the store CreateContainer resolves the pod's image in): it labels
    # the image it manages and adds the reference by image id, the config digest, to the same manifest.
    def cri_has_it() -> bool:
        listed_now = {line.split()[0]: line for line in ctr.run("images", "ls").stdout.splitlines()[1:] if line.strip()}
        return ("io.cri-containerd.image=managed" in listed_now.get(checkpoint["image"], "")
                and fields[2] in listed_now.get(manifest["config"]["digest"], ""))
    wait_until("containerd's CRI knows the image", cri_has_it, 15)

    in_layer = members(tarfile.open(fileobj=io.BytesIO(ctr.blob(layer["digest"])), mode="r:*"))
    in_archive = members(tarfile.open(fileobj=io.BytesIO(checkpoint["bytes"]), mode="r:"))
    assert in_layer == in_archive and len(in_archive) > 5, sorted(set(in_layer) ^ set(in_archive))

    # What CRImportCheckpoint mounts: a View of the snapshot named by the layer's chain id (one layer: its diff id)
    # in the CRI's snapshotter. Its files are the archive's, byte for byte, spec.dump and checkpoint/ at the root.
    [diff_id] = json.loads(ctr.blob(manifest["config"]["digest"]))["rootfs"]["diff_ids"]
    snapshots = ctr.run("snapshots", "--snapshotter", "overlayfs", "ls").stdout
    assert any(line.split()[:1] == [diff_id] and line.split()[-1] == "Committed" for line in snapshots.splitlines()), snapshots
    view = ctr.run("snapshots", "--snapshotter", "overlayfs", "view", "--mounts", "hcm-test-view", diff_id).stdout
    try:
        [mount] = json.loads(view)
        assert mount["Type"] == "bind" and mount["Source"].startswith("/var/lib/containerd/"), view  # a path in the node's root
        viewed = root / mount["Source"].lstrip("/")
        found = {str(p.relative_to(viewed)): hashlib.sha256(p.read_bytes()).hexdigest() for p in viewed.rglob("*") if p.is_file()}
        assert found == in_archive, sorted(set(found) ^ set(in_archive))
        assert {"spec.dump", "config.dump", "checkpoint/pstree.img"} <= set(found)
        # And it restores: a copy of what the CRI would mount (criu writes its log beside the images).
        opened = root.parent / "from-containerd"
        shutil.copytree(viewed, opened)
    finally:
        ctr.run("snapshots", "--snapshotter", "overlayfs", "rm", "hcm-test-view")
    assert_the_counter_resumes(debian_root, opened)

    # buildah's copy was only the workshop; no archive copy or password stays behind.
    assert checkpoint["image"].split(":")[0] not in buildah(root, "images", "--format", "{{.Name}}")
    assert not any((root / "var/lib/hybridcloud-migration/checkpoint-work").iterdir())
    assert not (root / "etc/hybridcloud-migration/restore-state-restic-password").exists()


def test_containerd_second_run_imports_nothing_and_a_removed_image_is_imported_again(containerd_node, checkpoint, s3_server):
    again, ctr = containerd_node["again"], containerd_node["ctr"]
    assert again.returncode == 0, failures(again) or again.output[-3000:]
    assert again.stats(NODE)["changed"] == 0, [r["_task"] for r in again.task_results(NODE) if r.get("changed")]
    assert not ran(again, "Restore the archive with restic") and not ran(again, "Import it into containerd, unpacked")
    counter = results(again)[0]
    digest = ctr.images()[checkpoint["image"]][2]
    assert counter["detail"] == f"built and imported into containerd by an earlier run (digest {digest})", counter

    # The skip trusts containerd, not the marker: with the image gone from containerd, the next run imports it again.
    ctr.run("images", "rm", "--sync", checkpoint["image"])
    assert checkpoint["image"] not in ctr.images()
    back = in_node_namespace(containerd_node["root"], containerd_node["playbook"], containerd_node["inventory"],
                             settings(checkpoint, s3_server), run_dir=containerd_node["run_dir"])
    assert back.returncode == 0, failures(back) or back.output[-3000:]
    assert len(ran(back, "Import it into containerd, unpacked")) == 1
    fields = ctr.images()[checkpoint["image"]]
    assert fields[3] == "complete" and fields[-1] == "true", fields


def test_checkpoint_runtime_info_reads_containerds_own_view_and_names_a_broken_file(containerd_bin, tmp_path):
    config = tmp_path / "config.toml"
    base = {"node": NODE, "crio_config": str(tmp_path / "crio.conf"), "crio_config_dir": str(tmp_path / "crio.conf.d"), "crio_binary": "",
            "criu_binary": "no-such-criu", "containerd_config": str(config), "containerd_binary": str(containerd_bin / "containerd"),
            "ctr_binary": str(containerd_bin / "ctr"), "kubelet_config": str(tmp_path / "none"), "kubelet_flags_file": str(tmp_path / "none")}
    config.write_text("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  enable_experimental_restore_via_create = false\n")
    off = run_module("checkpoint_runtime_info", base)
    assert not off.get("failed") and off["runtime"] == "containerd" and off["supported"] is False and not off["ready"], off
    assert off["sources"] == ["containerd config dump"] and off["containerd"]["ctr"] == str(containerd_bin / "ctr"), off
    assert ('set enable_experimental_restore_via_create = true in [plugins."io.containerd.cri.v1.runtime"] of ' + str(config)) in off["reason"]
    assert "worker_node_container_runtime=containerd" in off["reason"], off["reason"]

    config.write_text(CONTAINERD_CONFIG)  # containerd itself migrates nothing here: version 3, read as version 4
    on = run_module("checkpoint_runtime_info", base)
    assert on["ready"] and on["mode"] == "restore_via_create" and "no criu: install criu" in on["reason"], on

    config.write_text("[plugins.'io.containerd.cri.v1.runtime'\n")
    broken = run_module("checkpoint_runtime_info", base)
    assert broken.get("failed") and f"{config} is not valid TOML" in broken["msg"] and "Fix:" in broken["msg"], broken
