"""Adversarial training on the digits MLP at Linf eps 0.1, judged by the audit's own cascade (APGD-CE,
APGD-T, Square) on the whole test split with its gradient-masking checks: PGD-AT and TRADES reach the
issue's goals without a masking check firing; fast AT reports its number and its overfitting check, and
the check really stops a collapsing run. Models train once per module (about 30 s in all)."""
import math

import pytest
import torch

from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.defenses.adversarial_training import ATParams, OverfittingCheck, at_recipe, pgd_accuracy
from mlwarden.threats.tricking.pgd import pgd
from mlwarden.threats.tricking.whitebox_cascade import WhiteBoxCascade

EPS = 0.1


def cascade(model, data, tmp_path, **params):
    ctx = Context(target=TorchTarget(model, 10, data.input_shape), data=data,
                  evidence_dir=tmp_path / "evidence" / "whitebox-cascade")
    t = WhiteBoxCascade()
    p = t.params_for("quick", {"n_samples": len(data.x_test), "eps": EPS, **params})
    torch.manual_seed(0)
    return t.run(ctx, p)


def robust(f):
    return f.metric("robust_accuracy").value


@pytest.fixture(scope="module")
def trained(digits):
    out = {}
    for method in ("pgd", "trades", "fast"):
        recipe, facts = at_recipe(BUILTIN_RECIPES["mlp"], ATParams(method=method, eps=EPS), digits)
        model = recipe.fit(digits.x_train, digits.y_train, 10, seed=0)
        out[method] = (model, recipe, facts)
    return out


@pytest.fixture(scope="module")
def verdicts(trained, digits, digits_mlp, tmp_path_factory):
    d = tmp_path_factory.mktemp("at")
    out = {"plain": cascade(digits_mlp, digits, d / "plain")}
    for method, (model, _, _) in trained.items():
        out[method] = cascade(model, digits, d / method)
    return out


def test_pgd_at_and_trades_reach_the_goals_with_no_masking_check_fired(verdicts, digits):
    n = len(digits.x_test)
    plain = verdicts["plain"]
    assert plain.metric("robust_accuracy").n == n and robust(plain) < 0.5       # about 37% undefended
    for method, goal in (("pgd", 0.75), ("trades", 0.78)):
        f = verdicts[method]
        fired = [c.name for c in f.checks if c.fired]
        assert f.status.value == "ok" and fired == [], (method, fired)
        assert f.metric("robust_accuracy").reliable
        assert robust(f) >= goal, (method, robust(f))
        assert f.metric("clean_accuracy").value >= 0.93, (method, f.metric("clean_accuracy").value)
        # the interval of the gain excludes zero: more robust than the plain model, not by luck
        assert f.metric("robust_accuracy").ci_low > plain.metric("robust_accuracy").ci_high
        assert f.severity.rank < plain.severity.rank


def test_fast_at_reports_its_number_and_its_overfitting_check(verdicts, trained, digits):
    _, recipe, _ = trained["fast"]
    check = recipe.on_epoch
    facts = check.describe()
    assert len(facts["held_out_pgd_accuracy"]) == recipe.epochs                # checked after every epoch
    assert facts["overfitting_fired"] is False and facts["overfitting_check"].startswith("did not fire")
    assert len(check._held[1]) == len(digits.x_train) // 10                   # held out of training
    f = verdicts["fast"]
    assert f.status.value == "ok" and robust(f) > robust(verdicts["plain"]) + 0.2


def test_overfitting_check_stops_a_collapsing_run_and_keeps_the_best_weights(trained, digits):
    model, _, _ = trained["fast"]
    model = type(model)(digits.input_shape, 10)
    model.load_state_dict(trained["fast"][0].state_dict())
    s = digits.space
    check = OverfittingCheck(EPS, "linf", s.low, s.high, n_points=256, drop=0.2)
    check.hold_out(digits.x_train, digits.y_train)
    torch.manual_seed(0)
    assert check(0, model) is False                           # a robust model: the best epoch so far
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():                                     # a collapse: the first layer's weights scrambled
        first = model.net[1].weight
        first.copy_(first[torch.randperm(first.shape[0])][:, torch.randperm(first.shape[1])] * 5)
    x, y = check._held
    assert pgd_accuracy(model, x, y, EPS, "linf", s.low, s.high) < check.history[0] - 0.2
    assert check(1, model) is True                            # stop training
    assert check.fired_epoch == 1 and check.describe()["overfitting_check"].startswith("FIRED")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good.items())   # best weights restored


def test_l2_adversarial_training_raises_l2_robustness(digits, digits_mlp):
    recipe, facts = at_recipe(BUILTIN_RECIPES["mlp"], ATParams(method="pgd", eps=0.5, norm="l2", epochs=30), digits)
    assert facts["norm"] == "l2" and facts["eps_abs"] == pytest.approx(0.5 * digits.space.width)
    model = recipe.fit(digits.x_train, digits.y_train, 10, seed=0)
    x, y = digits.x_test, digits.y_test
    torch.manual_seed(0)

    def acc(m):
        adv = pgd(m, x, y, 0.5, "l2", 0.0, 1.0, steps=40)
        assert ((adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-4).all()
        return float((m(adv).argmax(1) == y).float().mean())
    before, after = acc(digits_mlp), acc(model)
    assert after > before + 0.15, (before, after)


@pytest.mark.parametrize("params, message", [
    ({"method": "trades"}, "cannot be combined with a defence that wraps training"),
    ({"eps": 1.0}, "covers the whole input range"),
])
def test_incompatible_settings_are_refused(digits, params, message):
    from mlwarden.core.errors import UserError
    recipe = BUILTIN_RECIPES["mlp"]
    if params.get("method") == "trades":
        recipe = recipe.with_(wrap=lambda m, o, l: (m, o, l))
    with pytest.raises(UserError, match=message):
        at_recipe(recipe, ATParams(**params), digits)


def test_dp_sgd_and_adversarial_training_train_once_together(digits, digits_mlp, tmp_path):
    """DP-SGD first fixes the training run (its accountant counts those steps); adversarial training then
    only replaces the batches, and asking it for other epochs is refused rather than silently breaking the
    privacy accounting."""
    from mlwarden.audit.runner import Subject
    from mlwarden.core.defense import DefenseContext, apply_defenses
    from mlwarden.core.errors import UserError
    from mlwarden.core.registry import get_defense
    dp, at = get_defense("dp-sgd"), get_defense("adversarial-training")
    subject = Subject(TorchTarget(digits_mlp, 10, digits.input_shape), digits, BUILTIN_RECIPES["mlp"])
    chosen = [(dp, dp.params_for("quick", {"epsilon": 8, "epochs": 15})), (at, at.params_for("quick"))]
    h = apply_defenses(subject, chosen, DefenseContext(digits, tmp_path))
    assert h.recipe.wrap is not None and h.recipe.batch_transform is not None and h.recipe.epochs == 15
    batches = math.ceil(len(digits.x_train) / h.recipe.batch_size)
    assert h.facts["dp-sgd"]["epsilon_spent"] <= 8 + 1e-6 and h.facts["dp-sgd"]["steps"] == 15 * batches
    x, y = digits.x_test, digits.y_test
    torch.manual_seed(0)
    adv_plain = pgd(digits_mlp, x, y, EPS, "linf", 0.0, 1.0, steps=40)
    adv = pgd(h.model, x, y, EPS, "linf", 0.0, 1.0, steps=40)
    assert float((h.model(adv).argmax(1) == y).float().mean()) > float((digits_mlp(adv_plain).argmax(1) == y).float().mean()) + 0.1
    with pytest.raises(UserError, match="set by the defence that wraps it"):
        apply_defenses(subject, [chosen[0], (at, at.params_for("quick", {"epochs": 50}))], DefenseContext(digits, tmp_path))


def test_adversarial_training_on_mixed_scale_tabular_data_uses_per_feature_budgets():
    """Raw breast-cancer features (ranges 0.05 to 4,254): trained and judged at 0.1 of each feature's range."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from mlwarden.core.data import make_dataset, normalized
    from mlwarden.core.target import RescaledTarget
    b = load_breast_cancer()
    xtr, xte, ytr, yte = train_test_split(b.data.astype(np.float32), b.target, test_size=0.25, random_state=0,
                                          stratify=b.target)
    data = make_dataset("bc", xtr, ytr, xte, yte)
    s, z = data.space, normalized(data)
    assert s.mixed_scales

    def pgd_robust(model):
        m = RescaledTarget(TorchTarget(model, 2, data.input_shape), s.feature_low, s.feature_high, s.integer).module
        torch.manual_seed(0)
        adv = pgd(m, z.x_test, z.y_test, EPS, "linf", 0.0, 1.0, steps=40)
        with torch.no_grad():
            return float((m(adv).argmax(1) == z.y_test).float().mean()), float((m(z.x_test).argmax(1) == z.y_test).float().mean())
    plain = BUILTIN_RECIPES["tabular-mlp"].fit(data.x_train, data.y_train, 2, seed=0)
    recipe, facts = at_recipe(BUILTIN_RECIPES["tabular-mlp"], ATParams(method="pgd", eps=EPS), data)
    assert facts["eps_abs"] == EPS                  # a fraction of each feature's range, not of [0, 4254]
    hardened = recipe.fit(data.x_train, data.y_train, 2, seed=0)
    (rb, _), (ra, clean) = pgd_robust(plain), pgd_robust(hardened)
    assert ra > rb + 0.2 and clean > 0.8, (rb, ra, clean)
