"""Threats and defences are plug-ins found through Python entry points, and the layers import only
downwards: a third-party package adds a threat and a defence without touching mlwarden, and a planted
upward import fails the contract."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..cli.run import mlwarden

PLUGIN = '''
"""A third-party plug-in: one threat, one defence."""
from mlwarden.core.defense import Defense
from mlwarden.core.finding import Severity, Status
from mlwarden.core.measure import accuracy
from mlwarden.core.target import Access
from mlwarden.core.threat import Threat


class MislabelRate(Threat):
    """How often the model is wrong on the test split (a plug-in threat)."""
    name = "plugin-mislabel-rate"
    family = "plugin-family"
    title = "Mislabel rate"
    needs = Access.LABELS
    in_default_audit = False

    def run(self, ctx, params):
        m = accuracy(ctx.target, ctx.data.x_test, ctx.data.y_test)
        return self.finding(ctx, params, status=Status.OK, severity=Severity.LOW,
                            headline=f"accuracy {m.text()}", metrics=[m])


class LabelsOnly(Defense):
    """Answer with labels only (a plug-in inference defence)."""
    name = "plugin-labels-only"
    title = "Labels only"
    kind = "inference"
    mitigates = ("plugin-mislabel-rate",)

    def defend_target(self, target, params, ctx):
        target.access = Access.LABELS
        return target, {"access": "labels"}
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    (root / "mlw_plugin.py").write_text(PLUGIN)
    info = root / "mlw_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlw-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [mlwarden.threats]
        mislabel = mlw_plugin:MislabelRate

        [mlwarden.defenses]
        labels-only = mlw_plugin:LabelsOnly
        """))
    return root


def run_with(plugin_path, *args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(plugin_path), COLUMNS="200", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mlwarden", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_plugin_threat_and_defence_are_listed_and_run(plugin_path, tmp_path, mlp_state_dict):
    listed = run_with(plugin_path, "threats")
    assert listed.returncode == 0 and "plugin-mislabel-rate" in listed.stdout
    assert "plugin-labels-only" in run_with(plugin_path, "defenses").stdout
    assert "plugin-mislabel-rate" not in mlwarden("threats").stdout   # not installed: not there
    model = ["--model", mlp_state_dict, "--factory", "mlwarden.core.zoo:mlp", "--data", "digits"]
    r = run_with(plugin_path, "audit", *model, "--threats", "plugin-family", "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr[-2000:]
    f = json.loads((tmp_path / "a" / "report.json").read_text())["findings"][0]
    assert f["threat"] == "plugin-mislabel-rate" and f["metrics"][0]["n"] == 450 and f["metrics"][0]["value"] > 0.9
    r = run_with(plugin_path, "harden", "--defense", "plugin-labels-only", *model, "--out", tmp_path / "h")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "h" / "harden.json").read_text())
    assert s["defenses"] == [{"name": "plugin-labels-only", "kind": "inference", "title": "Labels only"}]
    assert s["threats"] == ["plugin-mislabel-rate"]
    after = json.loads((tmp_path / "h" / "after" / "report.json").read_text())
    assert after["subject"]["model"]["access"] == "labels"


def test_a_plugin_named_like_a_builtin_is_one_line(plugin_path, tmp_path):
    (tmp_path / "clash.py").write_text("from mlw_plugin import MislabelRate\n\n\nclass Clash(MislabelRate):\n"
                                       "    name = 'fgsm'\n")
    info = tmp_path / "clash-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: clash\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mlwarden.threats]\nclash = clash:Clash\n")
    env_path = f"{tmp_path}{os.pathsep}{plugin_path}"
    r = run_with(env_path, "threats")
    assert r.returncode == 2 and "two plug-ins are named 'fgsm'" in r.stderr and "Traceback" not in r.stderr


def test_a_broken_plugin_is_one_line(tmp_path):
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mlwarden.threats]\nbroken = no_such_module:Thing\n")
    r = run_with(tmp_path, "threats")
    assert r.returncode == 2 and r.stderr.startswith("error: plug-in 'broken'") and "Traceback" not in r.stderr


def _lint(src_root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    env = dict(os.environ, PYTHONPATH=str(src_root))
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([str(exe), "--config", str(root / ".importlinter")], capture_output=True, text=True,
                          env=env, cwd=src_root, timeout=300)


def test_layers_contract_holds_and_catches_a_planted_upward_import(tmp_path):
    root = Path(__file__).resolve().parents[2]
    ok = _lint(root / "src")
    assert ok.returncode == 0, ok.stdout[-3000:]
    copy = tmp_path / "src"
    shutil.copytree(root / "src" / "mlwarden", copy / "mlwarden", ignore=shutil.ignore_patterns("__pycache__"))
    stats = copy / "mlwarden" / "core" / "stats.py"
    stats.write_text(stats.read_text() + "\nfrom ..audit import runner  # noqa: planted upward import\n")
    bad = _lint(copy)
    assert bad.returncode != 0
    assert "mlwarden.core is not allowed to import mlwarden.audit" in bad.stdout
