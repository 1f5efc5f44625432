"""The smoothing/preprocessing defences as backdoor-trigger defences: `harden --defense denoiser --threats
backdoor` retrains a BadNets-poisoned digits MLP (10%, target 0) and measures it behind the denoising
autoencoder, as the defender would serve it; randomized smoothing is measured the same way. Measured here:
the autoencoder (trained on clean digits) wipes most of the corner patch and cuts attack success from 100%
to about 25%; smoothing at its default sigma keeps it at 100% (the noise-trained model learns the patch
too), which the docs state."""
import pytest

from mlwarden.api import harden
from mlwarden.core.recipe import BUILTIN_RECIPES

BACKDOOR = {"backdoor": {"rates": [0.1], "headline_rate": 0.1}}


@pytest.fixture(scope="module")
def digits_mlp_clean(digits):
    return BUILTIN_RECIPES["mlp"].fit(digits.x_train, digits.y_train, 10, seed=0)


def _asr(report):
    return report.findings[0].metric("patch 10%: attack success rate")


def test_the_denoiser_in_front_of_a_retrained_backdoored_model_cuts_attack_success(digits, digits_mlp_clean,
                                                                                  tmp_path):
    res = harden(digits_mlp_clean, digits, "denoiser", recipe="mlp", threats=["backdoor"], threat_params=BACKDOOR,
                 out=tmp_path / "h")
    before, after = _asr(res.before), _asr(res.after[0])
    print(f"denoiser: attack success {before.text()} -> {after.text()}")
    assert before.value > 0.95
    assert after.ci_high < 0.5 and after.n == before.n
    assert "behind inference(denoiser(" in res.after[0].findings[0].details["notes"][0]
    assert "behind" not in res.before.findings[0].details["notes"][0]


def test_randomized_smoothing_answers_for_the_retrained_model_and_keeps_the_patch_backdoor(digits, digits_mlp_clean,
                                                                                          tmp_path):
    res = harden(digits_mlp_clean, digits, "randomized-smoothing", recipe="mlp", threats=["backdoor"],
                 threat_params=BACKDOOR, out=tmp_path / "h")
    before, after = _asr(res.before), _asr(res.after[0])
    clean_after = res.after[0].findings[0].metric("clean: test accuracy")
    print(f"randomized smoothing: attack success {before.text()} -> {after.text()}; clean model behind it "
          f"{clean_after.text()}")
    assert before.value > 0.95 and after.value > 0.9
    assert "behind inference(randomized-smoothing(" in res.after[0].findings[0].details["notes"][0]
