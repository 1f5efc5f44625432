"""The gradient-masking checks fire on a model that hides its gradients and not on a plain one;
in both cases the verdict the audit reports is the honest one."""
import torch
from torch import nn

from mlwarden.core.finding import Status
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.threats.tricking.whitebox_cascade import WhiteBoxCascade


class Quantize(nn.Module):
    """A non-differentiable input quantizer (a classic obfuscated-gradient 'defence')."""

    def forward(self, x):
        return torch.round(x * 4) / 4


class Noisy(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x + 0.05 * torch.randn_like(x))


def run_cascade(model, digits, tmp_path, **params):
    ctx = Context(target=TorchTarget(model, 10, digits.input_shape), data=digits,
                  evidence_dir=tmp_path / "evidence" / "whitebox-cascade")
    t = WhiteBoxCascade()
    p = t.params_for("quick", {"n_samples": 120, "apgd_steps": 30, "square_queries": 300, "curve_steps": 15,
                               **params})
    torch.manual_seed(0)
    return t.run(ctx, p)


def fired(f):
    return {c.name for c in f.checks if c.fired}


def test_plain_model_passes_checks_and_is_reported(digits, digits_mlp, tmp_path):
    f = run_cascade(digits_mlp, digits, tmp_path)
    assert fired(f) == set(), [c.detail for c in f.checks if c.fired]
    assert f.status is Status.OK
    assert f.metric("robust_accuracy").reliable
    assert f.metric("robust_accuracy").value < f.metric("clean_accuracy").value - 0.3
    assert (tmp_path / f.evidence[0]).exists()


def test_quantized_model_is_flagged_unreliable(digits, digits_mlp, tmp_path):
    model = nn.Sequential(Quantize(), digits_mlp)
    f = run_cascade(model, digits, tmp_path)
    assert "zero-gradient" in fired(f)
    assert "black-box-beats-white-box" in fired(f)  # Square finds what the blind gradients cannot
    assert f.status is Status.UNRELIABLE
    assert f.headline.startswith("unreliable: adaptive attack required")
    assert not f.metric("robust_accuracy").reliable
    # the white-box number alone would have overstated robustness
    assert f.metric("robust_accuracy_white_box").value > f.metric("robust_accuracy").value + 0.1


def test_probability_outputs_are_flagged(digits, digits_mlp, tmp_path):
    f = run_cascade(nn.Sequential(digits_mlp, nn.Softmax(dim=1)), digits, tmp_path, square_queries=0)
    assert "probability-outputs" in fired(f)
    assert f.status is Status.UNRELIABLE


def test_random_model_is_attacked_with_eot(digits, digits_mlp, tmp_path):
    f = run_cascade(Noisy(digits_mlp), digits, tmp_path, square_queries=0)
    assert "stochastic-outputs" in fired(f)
    # handled by EOT: the number stays a result unless another check fires
    assert f.metric("robust_accuracy").value < f.metric("clean_accuracy").value - 0.3


class Confident(nn.Module):
    """Logits scaled 1000x: float32 cross-entropy saturates, its input gradient is exactly zero while the
    margin's is not (what a model fed uint8-range inputs often looks like)."""

    def forward(self, z):
        return 1000 * z


def test_fgsm_checks_the_gradient_it_follows(digits, digits_mlp, tmp_path):
    from mlwarden.threats.tricking.fgsm import FGSM
    model = nn.Sequential(digits_mlp, Confident())
    ctx = Context(target=TorchTarget(model, 10, digits.input_shape), data=digits,
                  evidence_dir=tmp_path / "evidence" / "fgsm")
    t = FGSM()
    f = t.run(ctx, t.params_for("quick", {"n_samples": 100}))
    zero = next(c for c in f.checks if c.name == "zero-gradient")
    assert zero.fired and "cross-entropy" in zero.detail            # the margin's gradient is not zero here
    assert f.status is Status.UNRELIABLE and not f.metric("robust_accuracy").reliable
    # the same model through the cascade, whose DLR stage follows the margin: broken, not masked
    c = run_cascade(model, digits, tmp_path)
    assert not next(k for k in c.checks if k.name == "zero-gradient").fired
    assert c.metric("robust_accuracy").value < 0.5
