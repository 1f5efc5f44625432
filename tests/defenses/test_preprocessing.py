"""Input preprocessing judged by the attack adapted to it, on the digits MLP at Linf eps 0.1: 1-bit
squeezing attacked with BPDA lands within 2 points of the exact robust accuracy (every reachable
binarized input enumerated) and is reported as holding; the denoising autoencoder attacked end to end
is weaker than the oblivious attack suggests, with no masking check fired; JPEG and the median filter
keep their shapes and ranges."""
import itertools

import pytest
import torch

from mlwarden.core.defense import DefenseContext
from mlwarden.core.registry import get_defense
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.defenses.feature_squeezing import median_filter, squeeze_bits
from mlwarden.defenses.jpeg import JpegQuantize
from mlwarden.threats.tricking.whitebox_cascade import WhiteBoxCascade

EPS = 0.1


def cascade(target, data, tmp_path, n):
    ctx = Context(target=target, data=data, evidence_dir=tmp_path / "evidence" / "whitebox-cascade")
    t = WhiteBoxCascade()
    torch.manual_seed(0)
    return t.run(ctx, t.params_for("quick", {"n_samples": n, "eps": EPS}))


def exact_binarized_robust(model, x, y, eps):
    """For 1-bit squeezing at threshold 0.5 every reachable squeezed input is known: a pixel within eps of
    the threshold may land on either side, the others are fixed. A point is robust when every combination
    is classified correctly (enumerated exactly; no point here has more than 16 free pixels)."""
    robust = 0
    for xi, yi in zip(x, y):
        lo, hi = squeeze_bits((xi - eps).clamp(0, 1), 1, 0, 1), squeeze_bits((xi + eps).clamp(0, 1), 1, 0, 1)
        free = (lo != hi).flatten().nonzero()[:, 0]
        assert len(free) <= 16, len(free)
        combos = torch.tensor(list(itertools.product([0.0, 1.0], repeat=len(free))))
        batch = lo.flatten().repeat(len(combos), 1)
        batch[:, free] = combos
        with torch.no_grad():
            ok = bool((model(batch.view(-1, *xi.shape)).argmax(1) == yi).all())
        robust += ok
    return robust / len(y)


def defend(name, digits, digits_mlp, tmp_path, **params):
    d = get_defense(name)
    p = d.params_for("quick", {"eps": EPS, **params})
    target = TorchTarget(digits_mlp, 10, digits.input_shape, name="mlp")
    defended, facts = d.defend_target(target, p, DefenseContext(digits, tmp_path))
    return d, p, target, defended, facts


def test_one_bit_squeezing_bpda_matches_the_exact_robust_accuracy_and_holds(digits, digits_mlp, tmp_path):
    _, _, plain, defended, facts = defend("feature-squeezing", digits, digits_mlp, tmp_path, bits=1)
    assert facts["adaptive_attack"].startswith("BPDA")
    n = len(digits.x_test)
    f = cascade(defended, digits, tmp_path / "sq", n)
    exact = exact_binarized_robust(defended.module, digits.x_test, digits.y_test, EPS)
    bpda = f.metric("robust_accuracy").value
    assert abs(bpda - exact) <= 0.02, (bpda, exact)
    assert f.status.value == "ok" and not [c.name for c in f.checks if c.fired]   # it holds, and says so
    undefended = cascade(plain, digits, tmp_path / "plain", n).metric("robust_accuracy").value
    assert bpda > undefended + 0.2, (bpda, undefended)


def test_squeezing_without_bpda_would_be_flagged_as_masking(digits, digits_mlp, tmp_path):
    """The audit's checks catch the naive attack: through the real squeezing the gradient is zero."""
    from mlwarden.defenses.preprocessing import Preprocessed
    from mlwarden.defenses.feature_squeezing import Squeeze
    naive = TorchTarget(Preprocessed(Squeeze(1, None, 0.0, 1.0), digits_mlp, bpda=False), 10, digits.input_shape)
    f = cascade(naive, digits, tmp_path, 120)
    assert "zero-gradient" in {c.name for c in f.checks if c.fired} and f.status.value == "unreliable"


def test_denoiser_end_to_end_attack_beats_the_oblivious_one(digits, digits_mlp, tmp_path):
    d, p, plain, defended, facts = defend("denoiser", digits, digits_mlp, tmp_path)
    assert facts["test_reconstruction_mse"] < 0.05
    from types import SimpleNamespace
    ev = d.evaluate(SimpleNamespace(target=plain), SimpleNamespace(target=defended), p,
                    DefenseContext(digits, tmp_path))
    f = cascade(defended, digits, tmp_path / "dae", 200)
    assert not [c.name for c in f.checks if c.fired] and f.status.value == "ok"
    end_to_end = f.metric("robust_accuracy").value
    assert ev["oblivious"]["n"] == 200 and end_to_end < ev["oblivious"]["oblivious_robust_accuracy"] - 0.03
    clean = float((defended.labels(digits.x_test) == digits.y_test).float().mean())
    assert clean > 0.9


def test_jpeg_and_median_keep_shape_and_range_and_change_the_input(digits):
    x = digits.x_test[:16]
    for out in (JpegQuantize(50, 0.0, 1.0)(x), median_filter(x, 3)):
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
        assert 0 < float((out - x).abs().mean()) < 0.2
    assert torch.equal(median_filter(torch.ones(1, 1, 8, 8), 3), torch.ones(1, 1, 8, 8))
    assert torch.allclose(JpegQuantize(100, 0.0, 1.0)(x), x, atol=0.02)   # quality 100: almost lossless


@pytest.mark.parametrize("name, params, message", [
    ("feature-squeezing", {"bits": 0}, "needs bits or median"),
])
def test_bad_preprocessing_settings_are_refused(digits, digits_mlp, tmp_path, name, params, message):
    from mlwarden.core.errors import UserError
    with pytest.raises(UserError, match=message):
        defend(name, digits, digits_mlp, tmp_path, **params)
