"""Sequence-level membership inference against a real character LM trained on standard-library
docstrings: reference-calibrated RMIA separates the paragraphs it trained on from others, and planted
canaries show their membership too."""
import pytest

from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import all_threats
from mlwarden.core.target import Access, TorchTarget
from mlwarden.core.threat import Context
from mlwarden.text.corpus import load_text


@pytest.fixture(scope="module")
def lm_finding(tmp_path_factory):
    data = load_text("stdlib-docstrings", 30_000)
    recipe = BUILTIN_RECIPES["charlm"]
    model = recipe.fit(data.x_train, data.y_train, data.n_classes, seed=0)
    threat = all_threats()["lm-membership"]
    target = TorchTarget(model, data.n_classes, data.input_shape, access=Access.SCORES)
    ctx = Context(target=target, data=data, evidence_dir=tmp_path_factory.mktemp("lm") / "evidence" / threat.name,
                  recipe=recipe)
    return threat.run(ctx, threat.params_for("quick", {"n_reference": 4})), target


def test_reference_calibrated_attack_separates_training_paragraphs(lm_finding):
    f, _ = lm_finding
    assert f.status.value == "ok" and not any(c.fired for c in f.checks)
    auc = f.metric("rmia-online AUC")
    assert auc.n > 500 and auc.ci_low > 0.5, auc.text()
    # calibration beats the uncalibrated sequence loss at 1% FPR
    assert f.metric("rmia-online TPR at 1% FPR").ci_low > f.metric("loss TPR at 1% FPR").ci_high
    assert f.details["models_pooled"] == 4


def test_canaries_are_reported_on_their_own(lm_finding):
    f, _ = lm_finding
    m = f.metric(f"{f.details['best']} on canaries AUC")
    assert m.n == 4 * 16 and m.ci_low > 0.5, m.text()   # each of 16 canaries IN for 2 of the 4 models, OUT for 2
    row = {r["attack"]: r for r in f.details["table"]}[f.details["best"]]
    assert row["canaries_auc"] == m.value


def test_every_character_of_every_sequence_is_one_query(lm_finding):
    f, target = lm_finding
    note = next(n for n in f.details["notes"] if n.startswith("Signal"))
    per_model = int(note.split("; ")[-1].split()[0])
    assert target.queries == per_model > 20_000
