"""The Secret Sharer on a real character LM trained on standard-library docstrings: canaries inserted
often are extracted, once is not; under DP-SGD rare canaries fall to chance, a 16x canary can stay exposed
and the report says why (group privacy)."""
import math

import pytest
import torch

from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import all_threats
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.defenses.dp_sgd import dp_recipe
from mlwarden.text.corpus import load_text
from mlwarden.threats.memorization.canaries import insert, make_canaries
from mlwarden.threats.memorization.exposure import all_log_probs, estimated_exposure, exact_exposure
from mlwarden.threats.memorization.extraction import extract

MAX_BITS = math.log2(10**6)


@pytest.fixture(scope="module")
def corpus_data():
    return load_text("stdlib-docstrings", 100_000)


def _run(data, recipe, tmp_path):
    threat = all_threats()["secret-sharer"]
    target = TorchTarget(recipe.make_model(data.input_shape, data.n_classes), data.n_classes, data.input_shape)
    ctx = Context(target=target, data=data, evidence_dir=tmp_path / "evidence" / threat.name, recipe=recipe)
    f = threat.run(ctx, threat.params_for("quick"))
    return f, {r["insertions"]: r for r in f.details["table"]}


def test_canary_inserted_16_times_is_extracted_and_once_is_not(corpus_data, tmp_path):
    f, rows = _run(corpus_data, BUILTIN_RECIPES["charlm"], tmp_path)
    assert rows[16]["exposure_bits"] > MAX_BITS - 3 and rows[16]["extracted"]
    assert 0 < rows[16]["extraction_queries"] < 100
    assert not rows[1]["extracted"] and rows[1]["exposure_bits"] < 10
    assert rows[0]["exposure_bits"] < 6  # the control, never inserted
    assert f.severity.value == "critical" and f.status.value == "ok"
    assert not any(c.fired for c in f.checks)
    assert f.metric("canaries extracted").n == 3


def test_dp_sgd_hides_rare_canaries_but_not_a_repeated_one(corpus_data, tmp_path):
    rec, _ = dp_recipe(BUILTIN_RECIPES["charlm"], corpus_data.input_shape, corpus_data.n_classes,
                       len(corpus_data.x_train), epsilon=8.0)
    f, rows = _run(corpus_data, rec, tmp_path)
    for k in (1, 4):
        assert rows[k]["exposure_bits"] < 5 and not rows[k]["extracted"], rows[k]
    notes = " ".join(f.details["notes"])
    assert "group level" in notes and "Unit of privacy" in notes
    assert f.details["dp"]["target_epsilon"] == 8.0
    if rows[16]["exposure_bits"] >= 10:
        assert "group privacy" in f.headline


def test_exact_enumeration_matches_search_and_estimate(corpus_data):
    data = corpus_data
    corpus = data.corpus
    canaries = make_canaries([8], 4, seed=3)
    text = insert(corpus.train[:40_000], canaries, seed=3)
    d = corpus.dataset("small", text)
    model = BUILTIN_RECIPES["charlm"].with_(epochs=3).fit(d.x_train, d.y_train, d.n_classes, seed=0)
    c = canaries[0]
    lp = all_log_probs(model, corpus, c.prefix, 4)
    assert lp.shape == (10**4,)
    assert torch.logsumexp(torch.from_numpy(lp), 0) <= 1e-6  # probabilities of disjoint strings sum to <= 1
    exposure, rank = exact_exposure(model, corpus, c.prefix, c.secret)
    ex = extract(model, corpus, c.prefix, c.secret)
    assert (rank == 1) == ex.extracted
    assert ex.best_guess == f"{int(lp.argmax()):04d}"
    est = estimated_exposure(model, corpus, c.prefix, c.secret, samples=2000)
    assert abs(est - exposure) < 4 or (exposure > 10 and est > 8)
