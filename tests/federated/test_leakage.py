"""Gradient leakage from a client's update, and CKKS secure aggregation against it (digits, untrained small
networks: the round-1 model, where leakage is highest)."""
from __future__ import annotations

import pytest
import torch

from mlwarden.core.recipe import Recipe
from mlwarden.core.registry import all_threats
from mlwarden.core.stats import mean_interval
from mlwarden.core import zoo
from mlwarden.threats.federated.analytic import analytic, first_linear
from mlwarden.threats.federated.idlg import idlg_labels
from mlwarden.threats.federated.leakage import client_update, match, psnr

from .conftest import federation


def test_idlg_recovers_every_single_example_label(digits):
    """50 single-example updates of 50 differently initialised MLPs: every label recovered."""
    hits = 0
    for i in range(50):
        torch.manual_seed(i)
        model = zoo.mlp(digits.input_shape, 10)
        x, y = digits.x_train[i:i + 1], digits.y_train[i:i + 1]
        hits += int(idlg_labels(client_update(model, x, y), 1, 10)[0] == y[0])
    assert hits == 50


def test_dlg_reconstructs_single_digits_and_degrades_with_batch(fed_ctx):
    """DLG on the untrained sigmoid MLP: mean PSNR >= 25 dB on single digits; PSNR for batches 1, 2, 4, 8 with
    intervals, lower at 8 than at 1."""
    threat = all_threats()["dlg"]
    fed = federation(Recipe("sigmoid-mlp", zoo.sigmoid_mlp), clients=6)
    f = threat.run(fed_ctx(fed), threat.params_for("quick", {"batch_sizes": [1, 2, 4, 8], "trials": 6}))
    single = f.metric("PSNR, batch 1 (mean of 6 images)")
    assert single.ci_low >= 25, single
    eight = f.metric("PSNR, batch 8 (mean of 48 images)")
    assert eight.ci_high < single.ci_low and eight.ci_low is not None
    assert f.metric("labels recovered, batch 1").value == 1.0
    assert f.severity.value == "critical"
    assert (fed_ctx(fed).evidence_dir.parent.parent / f.evidence[0]).is_file()


def test_ckks_sum_equals_plaintext(digits):
    pytest.importorskip("tenseal", reason="the [he] extra (CI installs it)")
    from mlwarden.federated.ckks import CKKS
    g = torch.Generator().manual_seed(0)
    updates = 0.05 * torch.randn(8, 10_000, generator=g, dtype=torch.float64)
    total, cost = CKKS().secure_sum(updates)
    assert float((total - updates.sum(0)).abs().max()) < 1e-6
    assert cost["ciphertexts_per_client"] == 3 and cost["bytes_per_client"] > cost["plaintext_bytes_per_client"]


def test_the_sum_of_eight_leaks_less_than_one_update(digits):
    """The analytic first-layer attack on each client's single-example update, on the CKKS sum of the 8 updates,
    and on a random update of the same size: mean PSNR of the 8 images per trial, paired by trial."""
    pytest.importorskip("tenseal", reason="the [he] extra (CI installs it)")
    from mlwarden.threats.federated.leakage import secure_sum
    single, summed, random, recovered = [], [], [], 0
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        torch.manual_seed(trial)
        model = zoo.mlp(digits.input_shape, 10)
        pick = torch.randperm(len(digits.x_train), generator=g)[:8]
        xs, ys = digits.x_train[pick], digits.y_train[pick]
        parts = [client_update(model, xs[i:i + 1], ys[i:i + 1]) for i in range(8)]
        i = first_linear(model)
        own = torch.cat([psnr(match(xs[j:j + 1], analytic(parts[j], i, xs.shape).clamp(0, 1)), xs[j:j + 1], 1.0)
                         for j in range(8)])
        total = secure_sum(parts, {})
        from_sum = psnr(match(xs, analytic(total, i, xs.shape).clamp(0, 1)), xs, 1.0)
        noise = [torch.randn(t.shape, generator=g) * t.std() for t in parts[0]]
        rand = psnr(match(xs, analytic(noise, i, xs.shape).clamp(0, 1)), xs, 1.0)
        single.append(float(own.mean()))
        summed.append(float(from_sum.mean()))
        random.append(float(rand.mean()))
        recovered += int((from_sum >= 25).sum())
    gap = mean_interval([a - b for a, b in zip(single, summed)])
    assert gap[1] > 0, (single, summed)                               # the sum leaks less, paired interval
    assert mean_interval([b - r for b, r in zip(summed, random)])[1] > 0   # and still more than chance
    assert 0.3 < recovered / 160 < 1.0                                 # what the sum still leaks (docs/federated.md)


def test_secure_aggregation_hides_single_updates_in_harden(tmp_path):
    """harden --federated --defense secure-aggregation: the leakage audit before sees one update, after the sum."""
    pytest.importorskip("tenseal", reason="the [he] extra (CI installs it)")
    from mlwarden.api import harden
    from mlwarden.io.datasets import load_builtin
    data = load_builtin("digits", seed=0)
    fed = federation(clients=6, rounds=2)
    model = fed.fit(data.x_train, data.y_train, data.n_classes, seed=0)
    res = harden(model, data, "secure-aggregation", recipe=fed, out=tmp_path / "h",
                 threats=["idlg"])
    point = res.summary["points"][0]
    ckks = point["evaluation"]["secure-aggregation"]["ckks"]
    assert ckks["max_abs_error"] < 1e-6 and ckks["expansion"] > 1
    before, after = res.before.findings[0], res.after[0].findings[0]
    assert before.details["server_sees"] == "one client's update"
    assert after.details["server_sees"].startswith("the sum of 6 clients")
    assert after.metric("labels recovered, batch 1").value < before.metric("labels recovered, batch 1").value


def test_matching_with_fewer_candidates_than_originals():
    originals = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.5, 1.0)])
    out = match(originals, originals[1:2].clone())
    assert out.shape == originals.shape and torch.equal(out[1], originals[1])
    assert torch.equal(match(originals, originals[:0]), torch.zeros_like(originals))


def test_inverting_gradients_reconstructs_from_a_cnn_update(fed_ctx):
    """Cosine gradient matching with a TV prior on the untrained digits CNN, single images: well above what a
    random image scores."""
    threat = all_threats()["inverting-gradients"]
    f = threat.run(fed_ctx(federation(Recipe("cnn", zoo.cnn), clients=6)),
                   threat.params_for("quick", {"batch_sizes": [1], "trials": 3}))
    m = f.metric("PSNR, batch 1 (mean of 3 images)")
    assert m.value >= 25, m


def test_pruning_and_noise_stop_dlg_at_a_price(fed_ctx):
    """On the sigmoid MLP, 90% pruning and noise at 1x the update's RMS leave DLG nothing at >= 25 dB, where the
    plain update gives every image back; the harden tests of the CLI measure the accuracy cost."""
    from mlwarden.core.registry import get_defense
    threat = all_threats()["dlg"]
    base = federation(Recipe("sigmoid-mlp", zoo.sigmoid_mlp), clients=6)
    params = threat.params_for("quick", {"batch_sizes": [1], "trials": 4})
    plain = threat.run(fed_ctx(base), params).metric("originals recovered at >= 25 dB, batch 1")
    assert plain.value == 1.0
    for name, p in (("gradient-pruning", {"ratio": 0.9}), ("update-noise", {"sigma": 1.0})):
        d = get_defense(name)
        fed, _ = d.defend_recipe(base, d.Params(**p), None)
        got = threat.run(fed_ctx(fed), params).metric("originals recovered at >= 25 dB, batch 1")
        assert got.value == 0.0, (name, got)


def test_a_malicious_server_robs_the_secure_sum(fed_ctx):
    """Through the CKKS sum of 8 clients' updates (batch 4 each), the imprint module recovers far more originals
    than the honest model's analytic attack (disjoint Clopper-Pearson intervals)."""
    pytest.importorskip("tenseal", reason="the [he] extra (CI installs it)")
    fed = federation(Recipe("mlp", zoo.mlp), clients=8, aggregator="secure-aggregation")
    t = all_threats()
    params = {"batch_sizes": [4], "trials": 3}
    name = "originals recovered at >= 25 dB, batch 4"
    robbed = t["robbing-the-fed"].run(fed_ctx(fed), t["robbing-the-fed"].params_for("quick", params)).metric(name)
    honest = t["analytic-fc"].run(fed_ctx(fed), t["analytic-fc"].params_for("quick", params)).metric(name)
    assert robbed.n == 96 and robbed.value >= 0.5, robbed
    assert robbed.ci_low > honest.ci_high, (robbed, honest)
