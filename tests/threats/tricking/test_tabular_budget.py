"""Tabular evasion budgets are fractions of each feature's own range: a breast-cancer random forest on raw
features (ranges from 0.05 to 4,254) is attacked with changes a reader can interpret, the report states
the budget of every feature, and integer-valued columns stay whole numbers."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

import mlwarden
from mlwarden.core.data import make_dataset, normalized
from mlwarden.core.target import Denormalize


@pytest.fixture(scope="module")
def raw():
    b = load_breast_cancer()
    xtr, xte, ytr, yte = train_test_split(b.data.astype(np.float32), b.target, test_size=0.25, random_state=0,
                                          stratify=b.target)
    return xtr, ytr, xte, yte


def test_square_on_raw_breast_cancer_uses_per_feature_budgets(raw, tmp_path):
    xtr, ytr, xte, yte = raw
    rf = RandomForestClassifier(n_estimators=50, random_state=0).fit(xtr, ytr)
    rep = mlwarden.audit(rf, raw, threats=["square"], out=tmp_path / "run",
                         params={"square": {"n_samples": 100, "max_queries": 300}})
    f = rep.finding("square")
    budget = f.details["per_feature_budget"]
    ranges = np.concatenate([xtr, xte])
    expected = 0.1 * (ranges.max(0) - ranges.min(0))
    assert np.allclose(budget["budget"], expected, rtol=1e-4)
    global_budget = 0.1 * (ranges.max() - ranges.min())      # 425: what one global range allowed every feature
    assert min(budget["budget"]) < 1e-5 * global_budget      # small-scale features now move by small amounts
    assert max(budget["budget"]) <= global_budget
    assert "each feature's own range" in f.headline and f.status.value == "ok"
    assert "each feature's own range" in rep.subject["input_space"]
    # the adversarial examples really stay within each feature's budget: checked on the attack itself
    from mlwarden.core.target import sklearn_target
    from mlwarden.core.target import RescaledTarget
    from mlwarden.threats.tricking.square import square_linf
    data = make_dataset("bc", *raw)
    s = data.space
    target = RescaledTarget(sklearn_target(rf, 2, data.input_shape, "rf"), s.feature_low, s.feature_high, s.integer)
    z = normalized(data)
    adv, _, _ = square_linf(target.scores, z.x_test[:30], z.y_test[:30], 0.1, 0.0, 1.0, max_queries=200)
    moved = (Denormalize(s.feature_low, s.feature_high, s.integer)(adv) - data.x_test[:30]).abs()
    assert (moved <= s.feature_budget(0.1) + 1e-3 * s.feature_budget(0.1) + 1e-5).all()


def test_integer_columns_stay_whole_numbers():
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=200), rng.integers(0, 50, 200)].astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    data = make_dataset("mixed", x[:150], y[:150], x[150:], y[150:])
    s = data.space
    assert s.integer.tolist() == [False, True] and s.mixed_scales
    assert "1 integer-valued columns" in s.describe()
    z = normalized(data).x_test + 0.013                      # a perturbation in per-feature coordinates
    back = Denormalize(s.feature_low, s.feature_high, s.integer)(z)
    assert torch.equal(back[:, 1], back[:, 1].round()) and not torch.equal(back[:, 0], back[:, 0].round())


def test_declared_feature_ranges_and_integer_features_replace_the_inferred_ones(raw, tmp_path):
    from mlwarden.audit.config import AuditConfig
    from mlwarden.audit.subject import subject_from_config
    from mlwarden.core.errors import UserError
    xtr, ytr, xte, yte = raw
    np.savez(tmp_path / "bc.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    import torch as _torch
    from mlwarden.core.zoo import tabular_mlp
    _torch.save(tabular_mlp((30,), 2).state_dict(), tmp_path / "m.pt")
    both = np.concatenate([xtr, xte])
    ranges = [[0.0, float(hi) * 2] for hi in both.max(0)]
    cfg = AuditConfig.model_validate({"model": {"path": str(tmp_path / "m.pt"), "factory": "mlwarden.core.zoo:tabular_mlp"},
                                      "data": {"path": str(tmp_path / "bc.npz"), "feature_ranges": ranges,
                                               "integer_features": [3]}})
    s = subject_from_config(cfg).data.space
    assert s.feature_high.tolist() == pytest.approx([r[1] for r in ranges])
    assert s.integer.nonzero()[:, 0].tolist() == [3]
    assert "declared in data.feature_ranges" in s.describe() and "declared in data.integer_features" in s.describe()
    cfg.data.feature_ranges = [[0.0, 1.0]] * 30                 # 'area' lies far outside [0, 1]
    with pytest.raises(UserError, match="has values outside its declared range"):
        subject_from_config(cfg)
