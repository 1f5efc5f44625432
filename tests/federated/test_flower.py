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
    with flower.ray_session():   # the module's simulations share one Ray start (each one took 5-50 s)
        yield fed, app, go


def _ours(rule):
    return flower.strategy(rule, fraction_evaluate=0.0, min_train_nodes=6, min_available_nodes=6)


def test_flower_runs_the_in_process_federation(digits, setup):
    fed, app, go = setup
    ours = run(digits, fed, 0).accuracy
    theirs = go(_ours("fedavg"), app)
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-6, (ours, theirs)


def _users_server_app(init, rounds=3):
    """A ServerApp as a user writes it (Flower's own FedAvg, evaluation on the clients), unknown to mlwarden."""
    from flwr.app import ArrayRecord
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg
    app = ServerApp()

    @app.main()
    def main(grid, context):
        FedAvg(fraction_evaluate=1.0, min_train_nodes=6, min_available_nodes=6, min_evaluate_nodes=6).start(
            grid=grid, initial_arrays=ArrayRecord(init.state_dict()), num_rounds=rounds)
    return app


def test_fedavg_collapses_and_robust_strategies_hold(digits, setup):
    """A user's own ServerApp and ClientApp, audited unchanged (audit_flower_app): FedAvg collapses under one
    sign-flipping client mod; our median strategy (audit_flower) and Flower's FedMedian hold under it."""
    from flwr.serverapp.strategy import FedMedian
    fed, app, go = setup
    torch.manual_seed(0)
    init = fed.local().make_model(digits.input_shape, digits.n_classes)

    def evaluate(model):
        with torch.no_grad():
            return float((model(digits.x_test).argmax(1) == digits.y_test).float().mean())
    theirs = flower.audit_flower_app(_users_server_app(init), app, init, num_supernodes=6, malicious={2},
                                     evaluate=evaluate)
    assert len(theirs["clean"]) == 3 and theirs["clean"][-1] >= 0.9, theirs
    assert theirs["attacked"][-1] <= 0.2, theirs
    ours = flower.audit_flower(app, lambda: _ours("median"), init, num_supernodes=6, num_rounds=3, evaluate=evaluate,
                               malicious={2})
    assert ours["attacked"][-1] >= 0.88 and ours["clean"][-1] >= 0.9, ours
    attacked = flower.with_mods(app, flower.scaling_mod({2}, -10.0))
    flowers = FedMedian(fraction_evaluate=0.0, min_train_nodes=6, min_available_nodes=6)
    assert go(flowers, attacked)[-1] >= 0.88


def test_rules_that_need_the_server_root_set_are_refused():
    from mlwarden.core.errors import UserError
    with pytest.raises(UserError, match="root set"):
        flower.strategy("fltrust")
