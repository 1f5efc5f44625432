"""An extraction finding says "copied" only when the copy beats a constant answer (issue 34: "copied" at 37.1%
agreement on a two-class task whose majority class is 63%), and says what it saw in the answers instead of
calling them rounded."""
import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from mlwarden.core.data import InputSpace
from mlwarden.core.finding import Severity
from mlwarden.core.target import Target, sklearn_target
from mlwarden.threats.model_extraction.common import agreement, copy_verdict
from mlwarden.threats.model_extraction.equation_solving import EquationSolving

torch.set_num_threads(1)


def _cancer():
    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[:300]], y[order[:300]], x[order[300:]], y[order[300:]]


class _Constant(torch.nn.Module):
    """A 'copy' that answers one class for every input."""

    def __init__(self, label: int):
        super().__init__()
        self.label = label

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((len(x),), self.label), 2).float()


class _Abstaining(Target):
    """A victim that abstains (-1, as a randomized-smoothing classifier answers) on every third input and
    otherwise answers the logistic regression's label."""

    def __init__(self, inner):
        super().__init__(inner.access, 2, (30,), "abstaining")
        self.inner = inner

    def _scores(self, x):
        return self.inner.scores(x)

    def _labels(self, x):
        y = self.inner.labels(x).clone()
        y[::3] = -1
        return y


def test_abstentions_are_nobody_s_label_and_a_copy_on_skewed_data_is_not_oversold():
    """A victim that abstains (-1) on some inputs has its constant answer counted over the labels it gives (no
    crash on -1); and on a test set where the majority answer is right almost everywhere, a copy that agrees on
    one more point than the constant is marked as not shown to beat it, and at most low."""
    xtr, ytr, xte, _ = _cancer()
    victim = sklearn_target(LogisticRegression(max_iter=500).fit(xtr, ytr), 2, (30,))
    x_test = torch.from_numpy(xte)
    space = InputSpace(float(xte.min()), float(xte.max()), False)
    abstaining = _Abstaining(victim)
    majority = int(np.bincount(victim.labels(x_test).numpy()).argmax())
    a = agreement(abstaining, _Constant(majority), x_test, 100, space, 0)
    verdict, _, constant = copy_verdict(a, 10, len(xtr))
    assert verdict == "not copied" and constant.n == len(xte), (verdict, constant.text())
    skewed = x_test[victim.labels(x_test) == majority][:118]       # 118 of one label, then 2 of the other
    skewed = torch.cat([skewed, x_test[victim.labels(x_test) != majority][:2]])
    mostly = _Flip(majority, skewed[-1:])                          # the constant, right on one more point
    a = agreement(victim, mostly, skewed, 100, space, 0)
    verdict, severity, constant = copy_verdict(a, 10, len(xtr))
    assert a.test.value > constant.value and verdict.startswith("copied, not shown to beat a constant answer"), verdict
    assert severity is Severity.LOW   # graded, but never above low on a difference of one point


class _Flip(torch.nn.Module):
    """The constant `label`, except on the given points, where it answers the other class."""

    def __init__(self, label: int, points: torch.Tensor):
        super().__init__()
        self.label, self.points = label, points

    def forward(self, x):
        out = torch.full((len(x),), self.label)
        hit = (x[:, None, :] == self.points[None]).all(-1).any(1)
        out[hit] = 1 - self.label
        return torch.nn.functional.one_hot(out, 2).float()


def test_a_copy_no_better_than_a_constant_answer_is_not_copied():
    xtr, ytr, xte, _ = _cancer()
    victim = sklearn_target(LogisticRegression(max_iter=500).fit(xtr, ytr), 2, (30,))
    x_test = torch.from_numpy(xte)
    majority = int(np.bincount(victim.labels(x_test).numpy()).argmax())
    space = InputSpace(float(xte.min()), float(xte.max()), False)
    for label in (1 - majority, majority):   # the minority answer (below the majority rate), and the majority
        a = agreement(victim, _Constant(label), x_test, 100, space, 0)
        verdict, severity, constant = copy_verdict(a, 10, len(xtr))
        assert verdict == "not copied" and severity is Severity.INFO, (label, a.test.text(), constant.text())
    assert 0.55 < constant.value < 0.75 and constant.n == len(xte)
    real = torch.nn.Linear(30, 2)   # the victim's own weights: a copy that agrees on every test point
    est = victim.estimator
    with torch.no_grad():
        real.weight.copy_(torch.from_numpy(np.vstack([-est.coef_, est.coef_]) / 2))
        real.bias.copy_(torch.from_numpy(np.r_[-est.intercept_, est.intercept_] / 2))
    a = agreement(victim, real, x_test, 100, space, 0)
    verdict, severity, _ = copy_verdict(a, 10, len(xtr))
    assert a.test.value > 0.99 and verdict == "copied" and severity.rank > Severity.INFO.rank, a.test.text()


def test_equation_solving_on_a_forest_says_its_scores_sit_on_a_grid_not_that_they_were_rounded(tmp_path):
    """A 20-tree forest's probabilities are multiples of 1/20: nobody rounded them, and the finding says what it
    saw. Its copy (the best logistic regression) is judged against the constant answer like any other."""
    from mlwarden.api import audit
    xtr, ytr, xte, yte = _cancer()
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(xtr, ytr)
    f = audit(forest, (xtr, ytr, xte, yte), threats=["extract-equation-solving"], out=tmp_path / "run").finding(
        "extract-equation-solving")
    assert f.details["method"] == ("loss minimisation (L-BFGS): every answer lies on a grid of 2 decimals (rounded "
                                   "by the API, or coarse scores such as a tree ensemble's)"), f.details["method"]
    constant = f.metric("agreement of a constant answer (the victim's most common test label)")
    test = f.metric("agreement on test data (1 - R_test)")
    assert test.value > constant.value and f.headline.startswith("copied"), (f.headline, constant.text())


class _Redrawn(Target):
    """A randomized victim: its label flips on a fresh random fifth of the inputs at every call."""

    def __init__(self, inner):
        super().__init__(inner.access, 2, (30,), "redrawn")
        self.inner, self.calls, self.rng = inner, 0, torch.Generator().manual_seed(0)

    def _scores(self, x):
        return self.inner.scores(x)

    def _labels(self, x):
        self.calls += 1
        y = self.inner.labels(x).clone()
        flip = torch.rand(len(y), generator=self.rng) < 0.2
        return torch.where(flip, 1 - y, y)


def test_a_randomized_victim_is_judged_on_the_draw_its_agreement_was_measured_on():
    """The verdict's constant answer and its McNemar points come from the labels the agreement counted: the
    victim is asked once for the test points (and once for the uniform ones), not again by the verdict."""
    xtr, ytr, xte, _ = _cancer()
    victim = _Redrawn(sklearn_target(LogisticRegression(max_iter=500).fit(xtr, ytr), 2, (30,)))
    x_test = torch.from_numpy(xte)
    space = InputSpace(float(xte.min()), float(xte.max()), False)
    a = agreement(victim, _Constant(0), x_test, 100, space, 0)
    assert victim.calls == 2
    verdict, severity, constant = copy_verdict(a, 10, len(xtr))
    assert victim.calls == 2   # the verdict asked nothing more
    assert constant.value == float(torch.bincount(a.victim).max()) / len(a.victim)
    assert a.test.value == int((a.victim == 0).sum()) / len(a.victim)   # the same draw
    assert verdict == "not copied" and severity is Severity.INFO   # a constant copy never beats a constant
