"""The shadow-model attack on a binary classifier (two log-probabilities, so four features, not five): a
LogisticRegression's membership audit crashed on it once references were trained through the estimator itself."""
import numpy as np
from sklearn.metrics import roc_auc_score

from mlwarden.threats.membership import shadow_attack
from mlwarden.threats.membership.common import AttackInput


def _outputs(rng, members: np.ndarray, y: np.ndarray):
    """Log-probabilities of a model more confident on its members (true-label probability ~0.95 vs ~0.75)."""
    p_true = np.clip(np.where(members, 0.95, 0.75) + rng.normal(0, 0.08, len(y)), 0.02, 0.999)
    logp = np.empty((len(y), 2))
    logp[np.arange(len(y)), y] = np.log(p_true)
    logp[np.arange(len(y)), 1 - y] = np.log1p(-p_true)
    return logp, np.log(p_true) - np.log1p(-p_true)


def test_the_shadow_attack_scores_a_binary_model():
    rng = np.random.default_rng(0)
    n, refs = 400, 4
    y = rng.integers(0, 2, n)
    target_in = rng.random(n) < 0.5
    ref_in = rng.random((refs, n)) < 0.5
    logp, phi = _outputs(rng, target_in, y)
    ref = [_outputs(rng, ref_in[r], y) for r in range(refs)]
    a = AttackInput(logp, phi, np.stack([r[0] for r in ref]), np.stack([r[1] for r in ref]), ref_in, y)
    scores = shadow_attack.score(a)
    assert scores.shape == (n,)
    assert roc_auc_score(target_in, scores) > 0.8
