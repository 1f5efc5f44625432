"""The Kantchelian et al. 2016 MILP attack on XGBoost and LightGBM files (issue 33): the trees are read exactly,
every adversarial example is checked by the booster itself, the eps found is minimal (no simpler attack does
better, Square finds nothing below it) and robust accuracy falls with eps."""
import json

import numpy as np
import pytest
import torch

from mlwarden.core.data import normalized
from mlwarden.core.finding import Status
from mlwarden.core.target import RescaledTarget, sklearn_target
from mlwarden.core.threat import Context
from mlwarden.io.models import load_target
from mlwarden.threats.tricking.square import square_linf
from mlwarden.threats.tricking.tree_milp import TreeMilp, kantchelian_attack

from ..cli.run import mlwarden
from ..io.test_tree_models import write_csv

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")


def tiny_booster_file(folder, library="xgboost", dataset="cancer", **extra):
    """A 10-tree depth-3 booster saved natively, trained on the audit's train split of the dataset's CSV.
    Returns (model path, CSV path, Dataset). Audit it with
    `mlwarden audit --model PATH --data CSV --label-column y --threats tree-milp`."""
    from sklearn.datasets import load_breast_cancer, load_wine
    bunch = (load_breast_cancer if dataset == "cancer" else load_wine)()
    csv_path = folder / f"{dataset}.csv"
    data = write_csv(csv_path, bunch.data, bunch.target)
    args = {"n_estimators": 10, "max_depth": 3, "random_state": 0, "n_jobs": 1, **extra}
    x, y = data.x_train.numpy(), data.y_train.numpy()
    if library == "xgboost":
        path = folder / "model.json"
        xgb.XGBClassifier(**args).fit(x, y).save_model(path)
    else:
        path = folder / "model.txt"
        lgb.LGBMClassifier(**args, verbose=-1).fit(x, y).booster_.save_model(path)
    return path, csv_path, data


def audit_context(tmp_path, target, data, profile="quick"):
    """The threat's view in an audit: tabular evasion in per-feature [0, 1] coordinates (as audit/runner.py)."""
    s = data.space
    return Context(target=RescaledTarget(target, s.feature_low, s.feature_high, s.integer), data=normalized(data),
                   evidence_dir=tmp_path / "evidence" / "tree-milp", profile=profile)


def single_feature_baseline(fn, ens, x, y, low, high):
    """Best single-feature move across one split threshold per point (scaled Linf), or inf: a simple attack."""
    width = high - low
    best = np.full(len(x), np.inf)
    cands = {}
    for t in ens.trees:
        for n in np.flatnonzero(t.left >= 0):
            thr = np.float32(t.threshold[n])
            side = [thr, np.nextafter(thr, np.float32(-np.inf))] if ens.strict else \
                [thr, np.nextafter(np.float32(t.threshold[n]), np.float32(np.inf))]
            cands.setdefault(int(t.feature[n]), set()).update(float(v) for v in side)
    for f, values in cands.items():
        for v in values:
            if not low[f] <= v <= high[f]:
                continue
            moved = x.copy()
            moved[:, f] = v
            wrong = fn(moved).argmax(1) != y
            d = np.abs(np.float64(v) - x[:, f]) / width[f]
            best = np.where(wrong, np.minimum(best, d), best)
    return best


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_minimal_eps_is_verified_and_no_simpler_attack_beats_it(tmp_path, library):
    torch.set_num_threads(1)
    path, _, data = tiny_booster_file(tmp_path, library)
    target = load_target(str(path), data)
    fn = target.fn
    x_all = data.x_test.numpy()
    ens = fn.ensemble(x_all)
    assert (ens.predict(x_all) == fn(x_all).argmax(1)).all()   # the parsed trees are the booster's
    low, high = data.space.feature_low.double().numpy(), data.space.feature_high.double().numpy()
    x, y = x_all[:20], data.y_test.numpy()[:20]
    ok = fn(x).argmax(1) == y
    x, y = x[ok], y[ok]
    res = kantchelian_attack(ens, x, y, 1.0, scale=high - low, low=low, high=high, time_limit=30)
    assert len(res) >= 15 and all(r.optimal for r in res)
    found = np.array([r.eps is not None for r in res])
    assert found.all()   # eps_max=1 spans each feature's whole range: a depth-3 ensemble is beaten everywhere
    adv = np.stack([r.x_adv for r in res])
    eps = np.array([r.eps for r in res])
    assert (fn(adv).argmax(1) != y).all()                                      # the booster itself is fooled
    dist = (np.abs(adv.astype(np.float64) - x) / (high - low)).max(1)
    assert np.allclose(dist, eps, rtol=1e-4, atol=1e-6)
    assert ((adv >= low - 1e-6) & (adv <= high + 1e-6)).all()
    # baselines: the best single-feature threshold move, and Square (the audit's score-based attack) on a grid
    z, zw = torch.from_numpy((x - low) / (high - low)).float(), torch.from_numpy(high - low).float()
    query = lambda q: torch.from_numpy(fn((torch.from_numpy(low).float() + q * zw).numpy()))
    torch.manual_seed(0)
    square_eps = np.full(len(x), np.inf)
    for e in (0.5, 0.2, 0.1):
        _, _, fooled = square_linf(query, z, torch.from_numpy(y), e, 0.0, 1.0, max_queries=300)
        square_eps[fooled.numpy()] = e
    baseline = np.minimum(single_feature_baseline(fn, ens, x, y, low, high), square_eps)
    assert np.isfinite(baseline).sum() >= len(x) // 2
    assert (eps <= baseline + 1e-9).all()
    assert (eps < baseline - 1e-6).any()
    # ... and Square at 95% of each point's minimal eps finds nothing
    for i in range(len(x)):
        _, _, fooled = square_linf(query, z[i:i + 1], torch.tensor(y[i:i + 1]), 0.95 * eps[i], 0.0, 1.0,
                                   max_queries=100)
        assert not fooled.any(), (i, eps[i])


def test_the_threat_reports_a_falling_certified_curve(tmp_path):
    path, _, data = tiny_booster_file(tmp_path, "lightgbm")
    target = load_target(str(path), data)
    ctx = audit_context(tmp_path, target, data)
    threat = TreeMilp()
    assert threat.skip_reason(ctx) is None
    # a time limit far above the ~0.1 s a point takes: the exact answers must not hang on the machine's load
    f = threat.run(ctx, threat.params_for("quick", {"n_samples": 25, "eps_max": 1.0, "time_limit_s": 30.0}))
    assert f.status is Status.OK, f.headline
    m = {x.name: x for x in f.metrics}
    assert m["verification_failures"].value == 0 and m["solver_timed_out"].value == 0
    assert m["robust_accuracy"].n == 25 and m["robust_accuracy"].ci_low <= m["robust_accuracy"].value
    assert m["robust_accuracy"].value < m["clean_accuracy"].value
    curve = [c["robust_accuracy"] for c in f.details["curve"]]
    assert all(b <= a for a, b in zip(curve, curve[1:])) and curve[0] > curve[-1] == 0.0
    assert curve[0] == m["clean_accuracy"].value
    assert (tmp_path / "evidence" / "tree-milp" / "security_curve.png").stat().st_size > 0
    # the same points under l2 and l1 (paper sec. 3.3): verified too, and linf <= l2 <= l1 point by point
    found = {"linf": f.details["minimal_eps"]}
    for norm in ("l2", "l1"):
        fn_ = threat.run(ctx, threat.params_for("quick", {"n_samples": 25, "eps_max": 1.0, "norm": norm,
                                                          "time_limit_s": 30.0}))
        assert fn_.status is Status.OK and {x.name: x for x in fn_.metrics}["verification_failures"].value == 0
        found[norm] = fn_.details["minimal_eps"]
    rows = [e for e in zip(found["linf"], found["l2"], found["l1"]) if None not in e]
    assert len(rows) >= 20 and all(a - 1e-9 <= b <= c + 1e-9 for a, b, c in rows)
    assert sum(a + 1e-6 < c for a, _, c in rows) >= len(rows) // 2


def test_multiclass_margins_one_against_each_other_class(tmp_path):
    path, _, data = tiny_booster_file(tmp_path, "xgboost", "wine")
    target = load_target(str(path), data)
    fn = target.fn
    x = data.x_test.numpy()
    ens = fn.ensemble(x)
    assert ens.n_groups == 3 and (ens.predict(x) == fn(x).argmax(1)).all()
    low, high = data.space.feature_low.double().numpy(), data.space.feature_high.double().numpy()
    y = fn(x).argmax(1)[:15]
    res = kantchelian_attack(ens, x[:15], y, 1.0, scale=high - low, low=low, high=high)
    adv = np.stack([r.x_adv for r in res])
    assert all(r.optimal for r in res) and (fn(adv).argmax(1) != y).all()


def test_solver_time_limit_is_unresolved_never_robust(tmp_path):
    path, _, data = tiny_booster_file(tmp_path, "xgboost", n_estimators=150, max_depth=6)
    target = load_target(str(path), data)
    ctx = audit_context(tmp_path, target, data)
    f = TreeMilp().run(ctx, TreeMilp().params_for("quick", {"n_samples": 6, "time_limit_s": 0.001,
                                                            "max_leaves": 100000}))
    m = {x.name: x for x in f.metrics}
    assert m["solver_timed_out"].value > 0
    assert f.status is Status.UNRELIABLE and "unresolved" in f.headline
    assert m["robust_accuracy"].value + m["unresolved_at_eps"].value <= m["clean_accuracy"].value + 1e-9
    assert m["robust_accuracy"].reliable is False
    assert next(c for c in f.checks if c.name == "solver-time-limit").fired


def test_other_targets_and_unreadable_or_large_ensembles_are_skipped_or_failed_with_a_reason(tmp_path):
    from sklearn.linear_model import LogisticRegression
    path, _, data = tiny_booster_file(tmp_path, "xgboost")
    lr = LogisticRegression(max_iter=200).fit(data.x_train.numpy(), data.y_train.numpy())
    ctx = audit_context(tmp_path, sklearn_target(lr, 2, data.input_shape), data)
    assert "XGBoost or LightGBM" in TreeMilp().skip_reason(ctx)
    ctx = audit_context(tmp_path, load_target(str(path), data), data)
    f = TreeMilp().run(ctx, TreeMilp().params_for("quick", {"max_leaves": 10}))
    assert f.status is Status.SKIPPED and "max_leaves=10" in f.headline
    (tmp_path / "dart").mkdir()
    dart, _, _ = tiny_booster_file(tmp_path / "dart", "xgboost", booster="dart")
    ctx = audit_context(tmp_path, load_target(str(dart), data), data)
    f = TreeMilp().run(ctx, TreeMilp().params_for("quick"))
    assert f.status is Status.FAILED and "dart" in f.headline


@pytest.mark.slow   # an audit through the CLI (a subprocess importing the whole tool)
def test_cli_audit_of_an_xgboost_json_runs_the_milp(tmp_path):
    path, csv_path, _ = tiny_booster_file(tmp_path, "xgboost")
    r = mlwarden("audit", "--model", path, "--data", csv_path, "--label-column", "y", "--threats", "tree-milp,fgsm",
                 "--out", tmp_path / "audit", cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    findings = {f["threat"]: f for f in report["findings"]}
    f = findings["tree-milp"]
    assert f["status"] == "ok", f["headline"]
    m = {x["name"]: x for x in f["metrics"]}
    assert m["verification_failures"]["value"] == 0
    assert m["robust_accuracy"]["value"] < m["clean_accuracy"]["value"]
    assert 0 < m["median_minimal_eps"]["value"] <= 1
    assert "each feature's own range" in f["headline"]


NORM = {"linf": lambda d: d.max(1), "l1": lambda d: d.sum(1), "l2": lambda d: np.sqrt((d ** 2).sum(1))}


@pytest.mark.parametrize("norm", ["linf", "l1", "l2"])
def test_on_two_features_the_milp_equals_the_brute_force_minimum(tmp_path, norm):
    """On two features the minimum is at a corner of the leaf regions: every combination of x_i, each cut T
    and the largest input below T is tried, and the closest misclassified one must be what the MILP found."""
    rng = np.random.default_rng(0)
    x = rng.random((400, 2)).astype(np.float32)
    y = ((x[:, 0] - 0.5) ** 2 + (x[:, 1] - 0.5) ** 2 < 0.1).astype(int)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "eta": 0.5}, xgb.DMatrix(x, y), 8)
    b.save_model(tmp_path / "two.json")
    from mlwarden.io.boosters import BoosterScores
    fn = BoosterScores(str(tmp_path / "two.json"), "xgboost", "two.json")
    ens = fn.ensemble(x)
    pts, labels = x[:25], fn(x[:25]).argmax(1)
    res = kantchelian_attack(ens, pts, labels, 2.0, norm=norm, low=0.0, high=1.0)
    cuts = [sorted({np.float32(t.threshold[n]) for t in ens.trees for n in np.flatnonzero(t.left >= 0)
                    if t.feature[n] == f}) for f in range(2)]
    brute = []
    for p, label in zip(pts, labels):
        axes = [np.array([p[f], *cuts[f], *(np.nextafter(c, np.float32(-1)) for c in cuts[f])], np.float32)
                for f in range(2)]
        axes = [a[(a >= 0) & (a <= 1)] for a in axes]
        grid = np.stack(np.meshgrid(*axes), -1).reshape(-1, 2)
        wrong = fn(grid).argmax(1) != label
        brute.append(NORM[norm](np.abs(grid[wrong].astype(np.float64) - p)).min() if wrong.any() else np.inf)
    milp = [np.inf if r.eps is None else r.eps for r in res]
    assert all(r.optimal for r in res) and np.isfinite(brute).sum() >= 20
    np.testing.assert_allclose(milp, brute, atol=1e-6)
    adv = np.stack([r.x_adv for r in res if r.x_adv is not None])
    assert (fn(adv).argmax(1) != labels[[r.x_adv is not None for r in res]]).all()


def _chain_tree_file(tmp_path, data, depth):
    """A LightGBM text model whose one tree is a chain `depth` splits deep (a crafted file, not a trained one)."""
    model = lgb.LGBMClassifier(n_estimators=1, max_depth=2, verbose=-1).fit(data.x_train.numpy(),
                                                                             data.y_train.numpy())
    text = model.booster_.model_to_string()
    head, rest = text.split("\nTree=0\n", 1)
    tail = rest[rest.index("end of trees"):]
    lo, hi = float(data.x_train[:, 0].min()), float(data.x_train[:, 0].max())
    ts = np.linspace(lo, hi, depth + 2)[1:-1]
    tree = "\n".join([
        f"num_leaves={depth + 1}", "num_cat=0", "split_feature=" + " ".join(["0"] * depth),
        "split_gain=" + " ".join(["1"] * depth), "threshold=" + " ".join(f"{t:.17g}" for t in ts),
        "decision_type=" + " ".join(["2"] * depth), "left_child=" + " ".join(str(-1 - i) for i in range(depth)),
        "right_child=" + " ".join([str(i + 1) for i in range(depth - 1)] + [str(-1 - depth)]),
        "leaf_value=" + " ".join(f"{v:.6f}" for v in np.sin(np.arange(depth + 1))), "is_linear=0", "shrinkage=1"])
    (tmp_path / "chain.txt").write_text(f"{head}\nTree=0\n{tree}\n\n\n{tail}")
    return tmp_path / "chain.txt"


def test_hostile_booster_files_are_refused_with_a_reason_not_a_crash(tmp_path):
    """A tree deep enough to blow a recursive reader up (dump_model's nested JSON), and a model whose zero
    values count as missing (a split rule the program does not encode): a finding that says why, no exit 3."""
    _, _, data = tiny_booster_file(tmp_path, "lightgbm")
    chain = _chain_tree_file(tmp_path, data, 1500)
    target = load_target(str(chain), data)
    ens = target.fn.ensemble(data.x_test.numpy())   # read without recursion, and agrees with LightGBM
    assert ens.n_leaves == 1501 and ens.path_length > 1000 * 1000 // 2
    f = TreeMilp().run(audit_context(tmp_path, target, data), TreeMilp().params_for("quick"))
    assert f.status is Status.SKIPPED and "depths summing to" in f.headline
    (tmp_path / "zero").mkdir()
    zpath, _, _ = tiny_booster_file(tmp_path / "zero", "lightgbm", zero_as_missing=True)
    f = TreeMilp().run(audit_context(tmp_path, load_target(str(zpath), data), data), TreeMilp().params_for("quick"))
    assert f.status is Status.FAILED and "zero as missing" in f.headline


def test_a_solution_the_booster_does_not_confirm_is_a_defect_never_a_success(tmp_path, monkeypatch):
    """Trees that disagree with the booster (here: every leaf and the base negated, so x itself looks
    misclassified) give solutions the booster rejects: each counts as a verification failure, the point is
    unresolved (neither broken nor robust) and the finding is unreliable."""
    import dataclasses
    path, _, data = tiny_booster_file(tmp_path, "xgboost")
    target = load_target(str(path), data)
    true = target.fn.ensemble(data.x_test.numpy())
    flipped = dataclasses.replace(true, base=-true.base, trees=tuple(dataclasses.replace(t, value=-t.value)
                                                                      for t in true.trees))
    monkeypatch.setattr(target.fn, "ensemble", lambda probe: flipped)
    f = TreeMilp().run(audit_context(tmp_path, target, data), TreeMilp().params_for("quick", {"n_samples": 20}))
    m = {x.name: x for x in f.metrics}
    attacked = round(m["clean_accuracy"].value * 20)
    assert attacked >= 15 and m["verification_failures"].value == attacked
    assert m["robust_accuracy"].value == 0 and m["unresolved_at_eps"].value == m["clean_accuracy"].value
    assert f.status is Status.UNRELIABLE and next(c for c in f.checks if c.name == "verification-failed").fired
    assert f.details["curve"][0]["robust_accuracy"] == 0 and f.details["curve"][0]["unresolved"] == attacked
