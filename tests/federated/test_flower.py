"""Flower's own simulation (Ray) runs mlwarden's federation, aggregation rules and malicious clients: the same
federation gives the in-process simulation's numbers, FedAvg collapses under one sign-flipping client and a
robust strategy (ours, and Flower's FedMedian) holds under the same client."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("flwr", reason="the [flower] extra (CI installs it)")

from mlwarden.federated import flower  # noqa: E402

from .conftest import federation, run  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(digits):
    fed = federation(clients=6, rounds=3)
    torch.manual_seed(0)
    init = fed.local().make_model(digits.input_shape, digits.n_classes)
    app = flower.client_app(fed, digits.x_train, digits.y_train, digits.n_classes, 6, seed=0)

    def evaluate(model):
        with torch.no_grad():
            return float((model(digits.x_test).argmax(1) == digits.y_test).float().mean())

    def go(strategy, client_app):
        return flower.run_flower(client_app, strategy, init, num_supernodes=6, num_rounds=3, evaluate=evaluate)
    return fed, app, go


def _ours(rule):
    return flower.strategy(rule, fraction_evaluate=0.0, min_train_nodes=6, min_available_nodes=6)


def test_flower_runs_the_in_process_federation(digits, setup):
    fed, app, go = setup
    ours = run(digits, fed, 0).accuracy
    theirs = go(_ours("fedavg"), app)
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-6, (ours, theirs)


def test_fedavg_collapses_and_robust_strategies_hold(digits, setup):
    """audit_flower runs the user's ClientApp with and without the sign-flipping client mod."""
    from flwr.serverapp.strategy import FedMedian
    _, app, go = setup
    torch.manual_seed(0)
    init = federation().local().make_model(digits.input_shape, digits.n_classes)

    def evaluate(model):
        with torch.no_grad():
            return float((model(digits.x_test).argmax(1) == digits.y_test).float().mean())
    res = flower.audit_flower(app, lambda: _ours("fedavg"), init, num_supernodes=6, num_rounds=3, evaluate=evaluate,
                              malicious={2})
    assert res["clean"][-1] >= 0.9 and res["attacked"][-1] <= 0.2, res
    attacked = flower.with_mods(app, flower.scaling_mod({2}, -10.0))
    assert go(_ours("median"), attacked)[-1] >= 0.88
    flowers = FedMedian(fraction_evaluate=0.0, min_train_nodes=6, min_available_nodes=6)
    assert go(flowers, attacked)[-1] >= 0.88


def test_rules_that_need_the_server_root_set_are_refused():
    from mlwarden.core.errors import UserError
    with pytest.raises(UserError, match="root set"):
        flower.strategy("fltrust")
