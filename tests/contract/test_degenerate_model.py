"""A model that answers one class to everything (an untrained or collapsed network, a broken endpoint) is still
audited to the contract: each black-box threat finishes or skips with a reason, none fails."""
import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

import mlwarden
from mlwarden.core.registry import all_threats


def test_a_constant_model_gets_findings_or_reasons_not_failures(tmp_path):
    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    tr, te = order[:150], order[150:230]
    data = (x[tr], y[tr], x[te], y[te])

    def constant(rows):
        return np.tile([[0.9, 0.1]], (len(rows), 1)).astype(np.float32)

    black_box = [n for n, t in all_threats().items() if t.needs.value != "white-box"
                 and n.startswith(("extract-", "square", "hopskipjump"))]
    params = {"extract-svm-margin": {"initial": 50, "rounds": 2, "per_round": 20, "candidates": 500,
                                     "n_uniform": 500},
              "extract-retraining": {"budget": 100, "epochs": 10, "rounds": 2, "n_uniform": 500},
              "extract-knockoff": {"budget": 200, "epochs": 5, "n_uniform": 500},
              "extract-jacobian": {"seeds_per_class": 2, "rounds": 2, "epochs": 5, "n_uniform": 500},
              "extract-path-finding": {"max_queries": 5000, "n_uniform": 500},
              "square": {"n_samples": 20, "max_queries": 50}, "hopskipjump": {"n_samples": 10, "max_iter": 2}}
    torch.manual_seed(0)
    report = mlwarden.audit(constant, data, threats=black_box, out=tmp_path / "run", params=params)
    status = {f.threat: (f.status.value, f.headline) for f in report.findings}
    assert set(status) == set(black_box)
    assert not [t for t, (s, _) in status.items() if s == "failed"], status
    assert status["extract-svm-margin"][0] == "skipped" and "same label" in status["extract-svm-margin"][1]
    assert status["extract-linear-boundary"][0] == "skipped"
