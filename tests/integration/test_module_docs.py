"""ansible-doc renders every module of the collection, with examples and return values."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from tests.helpers.ansible_run import BIN, REPO, ansible_env

MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders(module):
    name = "hybridcloud.migration." + module
    shown = subprocess.run(
        [str(BIN / "ansible-doc"), "--json", name], env=ansible_env(), capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)[name]
    assert doc["doc"]["short_description"]
    assert doc["doc"]["options"] and doc["doc"]["author"]
    assert name in doc["examples"]
    assert doc["return"]
    assert pathlib.Path(doc["doc"]["filename"]).name == module + ".py"
