"""The remedy command a report prints runs as printed on the user's own CSV, whose label column is not
called 'label' (issue 33): the command carries --label-column, and `harden` takes it."""
import csv
import json
import shlex

import pytest
import torch

from .run import mlwarden

pytestmark = pytest.mark.slow   # end-to-end runs through the CLI


def test_the_printed_harden_command_runs_on_a_csv_with_its_own_label_column(tmp_path):
    from sklearn.datasets import load_breast_cancer

    from mlwarden.core.recipe import BUILTIN_RECIPES
    from mlwarden.io.datasets import load_data
    bc = load_breast_cancer()
    path = tmp_path / "patients.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{i}" for i in range(bc.data.shape[1])] + ["diagnosis"])
        w.writerows([*map(float, row), int(label)] for row, label in zip(bc.data, bc.target))
    data = load_data(str(path), label_column="diagnosis")
    net = BUILTIN_RECIPES["mlp"].with_(epochs=30).fit(data.x_train, data.y_train, 2, seed=0)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    a = mlwarden("audit", "--model", tmp_path / "net.pt", "--factory", "mlwarden.core.zoo:mlp", "--recipe", "mlp",
                 "--data", path, "--label-column", "diagnosis", "--threats", "fgsm", "--out", tmp_path / "audit",
                 cwd=tmp_path)
    assert a.returncode == 0, a.stderr[-2000:]
    command = json.loads((tmp_path / "audit" / "report.json").read_text())["findings"][0]["remedy"]["command"]
    assert "--label-column diagnosis" in command, command
    r = mlwarden(*shlex.split(command)[1:], "--out", tmp_path / "harden", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    points = json.loads((tmp_path / "harden" / "harden.json").read_text())["points"]
    assert points[0]["accuracy"]["value"] > 0.8   # the hardened model was trained on the same labels
