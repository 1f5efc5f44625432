"""The CLI reads its arguments before anything heavy loads: `--help`, `--version`, `threats`, `defenses` and
`scan` of a weights file or a scikit-learn file import no torch (issue 39). Each command runs in a fresh
interpreter, which reports the modules it had loaded when it exited."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import atexit, json, runpy, sys
atexit.register(lambda: print("\\nMODULES " + json.dumps(sorted(sys.modules))))
sys.argv = ["mlwarden", *json.loads(sys.argv[1])]
runpy.run_module("mlwarden", run_name="__main__")
"""


def loaded(*args: str, cwd=None) -> tuple[int, set[str]]:
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, cwd=cwd,
                       timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("MODULES "))
    return r.returncode, set(json.loads(line.removeprefix("MODULES ")))


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    import joblib
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from sklearn.linear_model import LogisticRegression
    d = tmp_path_factory.mktemp("small")
    net = torch.nn.Linear(4, 2)
    torch.save(net.state_dict(), d / "weights.pt")
    save_file(net.state_dict(), d / "weights.safetensors")
    x = np.random.default_rng(0).random((40, 4))
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int)), d / "clf.joblib")
    return d


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("threats",), ("defenses",), ("audit", "--help")])
def test_listing_commands_import_no_torch(args):
    code, modules = loaded(*args)
    assert code == 0
    assert "torch" not in modules and "scipy" not in modules, args


@pytest.mark.parametrize("name", ["weights.pt", "weights.safetensors", "clf.joblib"])
def test_scanning_a_small_file_imports_no_torch(small_files, name):
    code, modules = loaded("scan", name, cwd=small_files)
    assert code == 0, name   # each file is safe
    assert "torch" not in modules, name


def test_the_stored_catalogue_is_what_the_registry_describes():
    """`mlwarden threats` and `defenses` list built-ins from core/catalogue.json: it must equal the live
    registry (regenerate it with `python -m mlwarden.core.catalogue` after changing a threat or defence)."""
    from mlwarden.core import catalogue
    stored = json.loads(catalogue.FILE.read_text(encoding="utf-8"))
    for group in catalogue.GROUPS:
        assert stored[group] == json.loads(json.dumps(catalogue.live(group))), (
            f"{catalogue.FILE.name} is stale for {group}: run `python -m mlwarden.core.catalogue`")


def test_the_common_torch_weight_types_are_on_torchs_own_list():
    """The scan trusts these names without importing torch: each must be one torch's weights_only loader takes,
    and torch's list may name no module outside torch but the static data types."""
    from mlwarden.io.scan import trust
    allowed = trust.torch_weights_types()
    assert trust.TORCH_WEIGHTS_COMMON <= allowed
    assert {n for n in allowed if not n.startswith("torch.")} <= trust.STATIC_TYPES
