"""``python -m demo``: the demo site's story, step by step, with the collection's own playbooks.

The lab's parts (clusters, S3, moto, Velero, lab VMs) are started and stopped here; everything
a user of the collection does is an ``ansible-playbook`` run against demo/inventory, printed as
it goes. The checks at the end are what a person would look at: where the pods run, the local
volume's bytes on the new node, the counter going on from its checkpointed value.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_report import headline
from demo import checks
from demo.lab_site import NEW_NODE, ONPREM_VM, LabSite
from lab.hclab import LabError
from lab.hclab.services import ServiceError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
INVENTORY = HERE / "inventory"
LAB_VARS = INVENTORY / "group_vars/all/lab.yml"
# What a run leaves in its workdir: the reports and the playbooks' output (no secret is in them).
KEPT = frozenset({"report", "report-again", "ansible.log"})


class DemoError(RuntimeError):
    """A step failed; the message says which and what to look at."""


class Demo:
    def __init__(self, workdir: Path, keep: bool) -> None:
        self.workdir = workdir
        self.keep = keep
        self.started = time.monotonic()
        self.number = 0

    # -- what the user sees ---------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def step(self, text: str) -> None:
        self.number += 1
        print(flush=True)
        self.say(f"step {self.number}: {text}")

    def playbook(self, playbook: Path, *args: str, extra_vars: dict[str, Any] | None = None) -> str:
        """``ansible-playbook -i demo/inventory PLAYBOOK``, its output shown as it runs (and returned, and kept in ansible.log)."""
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(INVENTORY), str(playbook), *args]
        if extra_vars:
            argv += ["-e", json.dumps(extra_vars)]
        shown = [str(playbook.relative_to(REPO)), *args, *(f"-e {key}={value}" for key, value in (extra_vars or {}).items())]
        self.say("ansible-playbook -i demo/inventory " + " ".join(shown))
        env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default", "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml",
               "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "false", "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_RETRY_FILES_ENABLED": "False",
               "ANSIBLE_LOCALHOST_WARNING": "False"}
        env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".build/collections"))
        # Shown as it comes, and kept: the checks look for secrets in it and read the recap.
        output: list[str] = []
        with subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as ran, \
                (self.workdir / "ansible.log").open("a") as log:
            assert ran.stdout is not None
            for line in ran.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log.write(line)
                output.append(line)
        if ran.returncode != 0:
            raise DemoError(f"{playbook.relative_to(REPO)} failed (exit {ran.returncode}): its output above says where")
        return "".join(output)

    # -- the story ------------------------------------------------------------------------------
    def run(self) -> int:
        self.step("checking this machine (root, the lab's binaries)")
        LabSite.preflight()
        with contextlib.ExitStack() as stack:
            self.step("starting the lab: Kubernetes clusters onprem and cloud, an S3 server, moto (the cloud's EC2 API)")
            site = stack.enter_context(LabSite.started(self.workdir, self.say))
            stack.callback(self.say, "stopping everything the demo started")
            stack.callback(_remove, LAB_VARS)
            try:
                found = self.story(site)
            except DemoError as error:
                if self.keep:
                    self.say(f"FAILED: {error}")
                    self.look_around(site)
                raise
        report_dir = self.workdir / "report"
        report = json.loads((report_dir / "report.json").read_text())
        self.say(f"the demo took {(time.monotonic() - self.started) / 60:.1f} min; the report: {report_dir}/report.md and report.json")
        failed = [check for check in found if not check.passed]
        succeeded = report["outcome"] == "succeeded" and not failed
        if succeeded:
            self.tidy()
        else:
            self.say(f"everything the run wrote stays in {self.workdir} to look at (the lab's logs: {self.workdir}/lab)")
        print("\n" + (report_dir / "report.md").read_text().rstrip() + "\n", flush=True)
        if failed:
            print(f"{len(failed)} of {len(found)} checks failed: " + "; ".join(c.what for c in failed), flush=True)
        print(headline(report), flush=True)
        return 0 if succeeded else 1

    def story(self, site: LabSite) -> list[checks.Check]:
        """From the lab up to the checks after the migration; the caller stops the lab."""
        site.write_inventory_vars(LAB_VARS, restic_password=secrets.token_urlsafe(24))
        self.say(f"the inventory's lab settings: {LAB_VARS.relative_to(REPO)} (mode 0600)")

        self.step("building the worker image with playbooks/build_image.yml (target lab: the worker_node role into a Debian root)")
        site.seed_image()
        self.playbook(REPO / "playbooks/build_image.yml", extra_vars={"hcm_image_hosts": "lab_image", "hcm_image_build": True})
        site.finish_image()
        self.playbook(HERE / "playbooks/record_image.yml")

        self.step(f"booting {ONPREM_VM} from the worker image and joining it to onprem with kubeadm")
        site.boot_onprem_worker()
        self.playbook(HERE / "playbooks/onprem_worker.yml")

        self.step("deploying the shop (demo/manifests/shop.yml)")
        self.playbook(HERE / "playbooks/shop.yml")
        data = site.data_digests()
        self.say(f"db-0's local volume on {ONPREM_VM}: " + ", ".join(f"{name} sha256 {digest[:12]}" for name, digest in sorted(data.items())))

        self.step("setting up the backups with playbooks/backup.yml (Velero and its schedule, the node backup agent)")
        site.velero.start_in_background()
        self.playbook(REPO / "playbooks/backup.yml")
        site.velero.join_start()

        self.step("backing up now with playbooks/backup_now.yml: a Velero backup, then the node agent on each worker")
        before = site.counted()
        self.playbook(REPO / "playbooks/backup_now.yml")
        after = site.counted()
        self.say(f"the counter was between {before} and {after} when its checkpoint was taken")

        self.step(f"{ONPREM_VM} fails: the VM powers off, its pods' memory is gone")
        site.fail_onprem_worker()

        self.step(f"migrating: playbooks/migrate.yml -e hcm_failed_node={ONPREM_VM}")
        with site.vm_cloud():
            migrated_at = time.monotonic()
            report_dir = str(self.workdir / "report")
            self.playbook(REPO / "playbooks/migrate.yml", extra_vars={"hcm_failed_node": ONPREM_VM, "hcm_report_dir": report_dir})
            self.say(f"migrate.yml took {time.monotonic() - migrated_at:.0f} s")

            self.step("checking what a person would check")
            found = checks.run_all(site, data, (before, after), self.say)

            self.step("running migrate.yml again, as after an interruption: it finds everything done")
            again = self.playbook(REPO / "playbooks/migrate.yml", extra_vars={"hcm_failed_node": ONPREM_VM, "hcm_report_dir": report_dir + "-again"})
            found.append(checks.nothing_changed(site, again, ("lab-cloud", NEW_NODE), self.say))
            found.append(checks.no_secrets((self.workdir / "ansible.log").read_text(), site, self.say))
            if self.keep:
                self.look_around(site)
        return found

    def tidy(self) -> None:
        """After a run, the workdir keeps what a person reads (the reports, the playbooks' output);
        the lab's state, keys, buckets and VM disks go. A failed run keeps everything to look at."""
        kept = [path for path in sorted(self.workdir.iterdir()) if path.name in KEPT]
        for path in self.workdir.iterdir():
            if path.name in KEPT:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        self.say(f"removed the lab's state, keys and disks; kept in {self.workdir}: {', '.join(p.name for p in kept)}")

    def look_around(self, site: LabSite) -> None:
        self.say("--keep: everything stays up until you press Enter. To look around:")
        for line in site.how_to_look():
            print(f"    {line}", flush=True)
        with contextlib.suppress(EOFError, KeyboardInterrupt):
            input()


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def main(workdir: Path, keep: bool) -> int:
    demo = Demo(workdir, keep)
    try:
        return demo.run()
    except (DemoError, LabError, ServiceError) as error:  # each names what failed and the fix
        demo.say(f"FAILED: {error}")
        demo.say(f"everything the run wrote stays in {workdir} (the lab's logs: {workdir}/lab)")
        return 1
