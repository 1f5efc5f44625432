"""Label-only membership inference (Choquette-Choo et al. 2021) on a real overfit digits MLP that answers
labels only, in process and through a real `mlwarden serve` that returns labels: membership shows at 1%
FPR beyond chance, and calibrating the label's robustness with reference models is what makes it show."""
import numpy as np
import pytest
import torch

from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import all_threats
from mlwarden.core.target import Access, TorchTarget
from mlwarden.core.threat import Context
from mlwarden.io.http_target import HttpTarget
from mlwarden.privacy.views import View, apply_view, image_views
from mlwarden.serve.guards import GuardConfig

from ...serve.conftest import running

OVERFIT = BUILTIN_RECIPES["mlp"].with_(epochs=80)


@pytest.fixture(scope="module")
def overfit_mlp(digits):
    return OVERFIT.fit(digits.x_train, digits.y_train, 10, seed=0)


def _run(target, data, tmp_path, name="label-only-membership", **params):
    threat = all_threats()[name]
    ctx = Context(target=target, data=data, evidence_dir=tmp_path / "evidence" / threat.name, recipe=OVERFIT)
    return threat, ctx, threat.run(ctx, threat.params_for("quick", {"n_reference": 8, **params}))


@pytest.fixture(scope="module")
def local_finding(digits, overfit_mlp, tmp_path_factory):
    target = TorchTarget(overfit_mlp, 10, digits.input_shape, access=Access.LABELS)
    _, _, f = _run(target, digits, tmp_path_factory.mktemp("lo"))
    return f, target


def test_labels_alone_reveal_membership_beyond_chance(digits, local_finding):
    f, target = local_finding
    assert f.status.value == "ok" and not any(c.fired for c in f.checks)
    best = f.metric(f"{f.details['best']} TPR at 1% FPR")
    assert best.reliable and best.n > 5000 and best.ci_low > 0.01, best.text()
    # the reference models' calibration is what makes the label's robustness informative at low FPR
    raw = f.metric("robustness TPR at 1% FPR")
    assert best.ci_low > raw.ci_high, (best.text(), raw.text())
    # 9 views and 3 x 10 noisy copies of every point of the pool, each answered with a label
    assert target.queries == 39 * (len(digits.x_train) + len(digits.x_test))
    assert "39 labels-only queries" in f.details["notes"][0]


def test_score_based_inference_is_skipped_on_a_labels_only_target(digits, overfit_mlp, tmp_path):
    threat = all_threats()["membership-inference"]
    target = TorchTarget(overfit_mlp, 10, digits.input_shape, access=Access.LABELS)
    ctx = Context(target=target, data=digits, evidence_dir=tmp_path, recipe=OVERFIT)
    assert "needs scores access" in threat.skip_reason(ctx)
    assert all_threats()["label-only-membership"].skip_reason(ctx) is None


def test_label_only_through_a_served_labels_only_model(digits, overfit_mlp, local_finding, tmp_path):
    """The served model answers labels (`output = "label"`); the HTTP client detects it and the attack gets
    exactly the labels it got in process."""
    served = TorchTarget(overfit_mlp, 10, digits.input_shape)
    with running(served, digits.space, GuardConfig(output="label")) as url:
        target = HttpTarget(url, 10, digits.input_shape)
        assert target.access is Access.LABELS
        _, _, f = _run(target, digits, tmp_path)
    local = {r["attack"]: r for r in local_finding[0].details["table"]}
    for r in f.details["table"]:
        assert r["target_only_auc"] == pytest.approx(local[r["attack"]]["target_only_auc"], abs=1e-12)
        assert r["tpr_at_1pct"] == pytest.approx(local[r["attack"]]["tpr_at_1pct"], abs=1e-12)
    assert f.metric(f"{f.details['best']} TPR at 1% FPR").ci_low > 0.01
    assert target.queries == 39 * (len(digits.x_train) + len(digits.x_test))


def test_views_shift_and_flip_images_by_whole_pixels():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    right = apply_view(x, View(False, 0, 1), fill=-1.0)
    assert torch.equal(right[0, 0, :, 1:], x[0, 0, :, :3]) and (right[0, 0, :, 0] == -1).all()
    up = apply_view(x, View(False, -1, 0), fill=-1.0)
    assert torch.equal(up[0, 0, :3], x[0, 0, 1:]) and (up[0, 0, 3] == -1).all()
    assert torch.equal(apply_view(x, View(True, 0, 0)), x.flip(-1))
    assert image_views(1, False) == [View(False, 0, 0)] and len(image_views(18, True)) == 18
    with pytest.raises(ValueError):
        image_views(10, False)


def test_augmentation_queries_average_the_scores_over_views(digits, overfit_mlp, tmp_path):
    """Every view is a real query: the audited model answers 5 x the pool, and the note lists the views."""
    target = TorchTarget(overfit_mlp, 10, digits.input_shape, access=Access.SCORES)
    _, _, f = _run(target, digits, tmp_path, name="membership-inference", augmentations=5,
                   attacks=["loss", "rmia-online"])
    assert target.queries == 5 * (len(digits.x_train) + len(digits.x_test))
    assert any("queried 5 ways" in n for n in f.details["notes"])
    assert np.isfinite(f.metric("rmia-online AUC").value)
