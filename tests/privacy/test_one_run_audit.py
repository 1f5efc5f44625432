"""The one-run privacy audit (Steinke et al. 2023) on real training runs."""
import pytest

from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.defenses.dp_sgd import dp_recipe
from mlwarden.privacy.one_run_audit import epsilon_lower_bound, one_run_audit, p_value


def test_bound_is_monotone_and_zero_at_chance():
    assert epsilon_lower_bound(1000, 100, 50, 1e-5) == 0.0
    assert epsilon_lower_bound(1000, 100, 100, 0) > epsilon_lower_bound(1000, 100, 90, 0) > 0
    # all 100 guesses right, no delta: p = q^100 = 0.05 at q = 0.9705, eps = log(q / (1 - q)) = 3.49
    assert epsilon_lower_bound(1000, 100, 100, 0) == pytest.approx(3.49, abs=0.01)
    assert p_value(1000, 100, 60, 0.5, 1e-5) >= p_value(1000, 100, 60, 0.5, 0)


def test_non_private_model_is_certified_not_dp_and_dp_model_never_exceeds_its_epsilon(digits):
    kw = dict(delta=1e-5, low=0.0, high=1.0, m=500, seed=0)
    plain = one_run_audit(BUILTIN_RECIPES["mlp"], digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                          10, **kw)
    assert plain.epsilon_lower_bound > 1.0, plain  # not (1, 1e-5)-DP, at 95% confidence
    rec, _ = dp_recipe(BUILTIN_RECIPES["mlp"].with_(epochs=15), digits.input_shape, 10, len(digits.x_train),
                       epsilon=2.0, delta=1e-5)
    private = one_run_audit(rec, digits.x_train, digits.y_train, digits.x_test, digits.y_test, 10, **kw)
    assert private.epsilon_lower_bound <= rec.wrap.spent() + 1e-9, private
    assert private.epsilon_lower_bound < plain.epsilon_lower_bound
