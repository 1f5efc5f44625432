"""Flower adapters (extra `[flower]`, flwr >= 1.20 and its simulation, which needs Ray).

- `strategy(rule, params)`: any mlwarden aggregation rule (fedavg, krum, multi-krum, median, trimmed-mean,
  bulyan, norm-clipping, dp-fedavg) as a Flower strategy (the Message API's FedAvg with `aggregate_train`
  replaced): the server turns the replies into updates against the global model it sent and aggregates
  them with the rule, as the in-process simulation does. FLTrust needs a server-side root set and is not
  offered here.
- `malicious_mod(partitions, transform)`: a Flower client mod that rewrites the model a malicious client
  sends back (only for the partition ids given); `scaling_mod` flips and boosts it (sign flipping at -10,
  model-replacement boosting at K). Attacks that need the other clients' updates (A Little Is Enough,
  inner-product manipulation, Fang et al.) need collusion that a client mod cannot see; run them in process.
- `with_mods(client_app, *mods)`: a user's ClientApp with mods in front of it.
- `client_app(recipe, data, clients, ...)`: a ClientApp whose clients train exactly as the in-process
  simulation's (same partition, same seeds, the recipe's one loop), so the two can be compared.
- `run_flower(...)` runs a ServerApp built around a strategy in Flower's simulation and returns the central
  evaluation per round; `audit_flower(...)` runs it without and with malicious clients.
- `ray_session(cpus)`: the simulations inside it share one Ray start (flwr starts and stops Ray for each).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Callable

import numpy as np
import torch

from ..core.errors import UserError
from ..core.extras import require
from .aggregate import RoundInfo, rule_for


def _flwr():
    require("flwr", "flower", "the Flower adapters")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")   # no network calls from a security tool
    import flwr
    logging.getLogger("flwr").setLevel(logging.ERROR)   # its INFO lines and deprecation notices
    return flwr


def _flat(arrays: list[np.ndarray]) -> torch.Tensor:
    return updates_matrix([arrays])[0]


def updates_matrix(clients: list[list[np.ndarray]]) -> torch.Tensor:
    """Flower's per-client lists of arrays as the (K, P) float64 matrix the rules take. Every array is cast as
    it is copied into one preallocated buffer, one write of K x P values: 20 ms for 11 clients of 1M float32
    parameters, where a float64 copy of every array, their concatenation and the stack took 150 ms."""
    p = sum(int(np.size(a)) for a in clients[0])
    out = np.empty((len(clients), p), dtype=np.float64)
    for row, arrays in zip(out, clients):
        sizes = [int(np.size(a)) for a in arrays]
        if sum(sizes) != p:
            raise ValueError(f"a client sent {sum(sizes)} parameters, the first {p}")
        i = 0
        for a, n in zip(arrays, sizes):
            row[i:i + n] = np.asarray(a).reshape(-1)
            i += n
    return torch.from_numpy(out)


def from_vector(vec: torch.Tensor, like: list[np.ndarray]) -> list[np.ndarray]:
    """A flat vector as arrays of the shapes and dtypes of `like` (Flower's layout)."""
    out, i = [], 0
    for a in like:
        n = int(np.prod(a.shape))
        out.append(vec[i:i + n].numpy().reshape(a.shape).astype(a.dtype))
        i += n
    return out


def _record(arrays: list[np.ndarray], keys: list[str]):
    from flwr.app import ArrayRecord
    return ArrayRecord({k: v for k, v in zip(keys, ArrayRecord([np.ascontiguousarray(a) for a in arrays]).values())})


def strategy(rule: str = "fedavg", params: dict | None = None, *, seed: int = 0, **kwargs):
    """A Flower strategy (flwr.serverapp.strategy.FedAvg) that aggregates with an mlwarden rule. `kwargs` go
    to FedAvg (fraction_train, min_train_nodes, ...)."""
    _flwr()
    from flwr.serverapp.strategy import FedAvg
    if rule == "fltrust":
        raise UserError("fltrust needs the server's own root set; it runs in the in-process simulation only")
    fn = rule_for(rule, dict(params or {}))

    class MlwardenStrategy(FedAvg):
        def __init__(self):
            super().__init__(**kwargs)
            self.rule_name, self.rule, self.globals = rule, fn, {}
            self.generator = torch.Generator().manual_seed(seed + 7919)

        def configure_train(self, server_round, arrays, config, grid):
            self.globals[server_round] = (list(arrays.keys()), arrays.to_numpy_ndarrays())
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            valid = [m for m in replies if not m.has_error()]
            if not valid:
                return None, None
            keys, start = self.globals.pop(server_round)
            g = _flat(start)
            updates = updates_matrix([m.content["arrays"].to_numpy_ndarrays() for m in valid])
            updates -= g
            weights = torch.tensor([float(m.content["metrics"][self.weighted_by_key]) for m in valid],
                                   dtype=updates.dtype)
            info = RoundInfo(server_round - 1, len(valid), float(len(valid)), self.generator)
            new = g + self.rule(updates, weights, info)
            metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
            return _record(from_vector(new, start), keys), metrics

    s = MlwardenStrategy()
    s.__class__.__name__ = f"Mlwarden[{rule}]"
    return s


def malicious_mod(partitions, transform: Callable[[list, list], list]):
    """A client mod: for TRAIN messages of the given partition ids, the reply's model becomes
    transform(global arrays, trained arrays)."""
    _flwr()
    bad = frozenset(int(p) for p in partitions)

    def mod(msg, context, call_next):
        from flwr.app import MessageType
        pid = int(context.node_config.get("partition-id", -1))
        if msg.metadata.message_type != MessageType.TRAIN or pid not in bad:
            return call_next(msg, context)
        sent = next(iter(msg.content.array_records.values())).to_numpy_ndarrays()
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        key, rec = next(iter(reply.content.array_records.items()))
        reply.content.array_records[key] = _record(transform(sent, rec.to_numpy_ndarrays()), list(rec.keys()))
        return reply
    return mod


def scaling_mod(partitions, scale: float = -10.0):
    """Malicious clients send global + scale x (their update): sign flipping (-1, -10) or boosting (K)."""
    return malicious_mod(partitions, lambda g, w: [gi + scale * (wi - gi) for gi, wi in zip(g, w)])


def with_mods(app, *mods):
    """A ClientApp that runs `app` behind `mods` (for an app whose functions are already registered)."""
    _flwr()
    from flwr.clientapp import ClientApp
    wrapped = ClientApp(mods=list(mods))

    @wrapped.train()
    def train(msg, context):
        return app(msg, context)

    @wrapped.evaluate()
    def evaluate(msg, context):
        return app(msg, context)
    return wrapped


def client_app(recipe, x: torch.Tensor, y: torch.Tensor, n_classes: int, clients: int, *, seed: int = 0,
               partition_kind: str = "iid", alpha: float = 0.5, shards: int = 2):
    """A ClientApp whose client `partition-id` trains like client `partition-id` of the in-process simulation
    (same partition, seeds and recipe)."""
    _flwr()
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from .aggregate import as_vector, load_vector
    from .partition import partition
    from .recipe import transform_update
    from .simulation import client_seed
    idx = partition(y, clients, partition_kind, alpha=alpha, shards=shards, seed=seed)
    parts = [(x[i], y[i]) for i in idx]
    local = recipe.local() if getattr(recipe, "federated", False) else recipe
    transforms = tuple(getattr(recipe, "update_transforms", ()))
    shape = tuple(x.shape[1:])
    app = ClientApp()

    @app.train()
    def train(msg, context):
        torch.set_num_threads(1)
        pid = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"]) - 1
        xs, ys = parts[pid]
        start = local.make_model(shape, n_classes)
        start.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        model = local.fit(xs, ys, n_classes, seed=client_seed(seed, rnd, pid), init=start)
        if transforms:   # the client's own defences on its update (pruning, noise), as in the simulation
            delta = transform_update(as_vector(model) - as_vector(start), transforms, client_seed(seed, rnd, pid) + 1)
            model = load_vector(start, as_vector(start) + delta)
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                              "metrics": MetricRecord({"num-examples": len(xs)})})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg, context):
        pid = int(context.node_config["partition-id"])
        xs, ys = parts[pid]
        model = local.make_model(shape, n_classes)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        with torch.no_grad():
            acc = float((model.eval()(xs).argmax(1) == ys).float().mean())
        return Message(content=RecordDict({"metrics": MetricRecord({"accuracy": acc, "num-examples": len(xs)})}),
                       reply_to=msg)
    return app


def _ray_init_args(cpus: int) -> dict:
    return {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False, "logging_level": "ERROR",
            "log_to_driver": False}


class _KeepRunning:
    """Ray as flwr's Ray backend sees it inside ray_session: everything but shutdown."""

    def __init__(self, ray):
        self._ray = ray

    def __getattr__(self, name):
        return getattr(self._ray, name)

    def shutdown(self, *args, **kwargs) -> None:
        pass


@contextlib.contextmanager
def ray_session(cpus: int = 2):
    """One Ray runtime for every Flower simulation inside the block. flwr's simulation starts Ray when it is not
    running and shuts it down at the end of every run; a start took 5 to 50 s here (more than a small federation
    trains), so audit_flower and audit_flower_app run their two simulations in one session, and a caller that
    runs several can wrap them all. Ray started by someone else is used and left running."""
    _flwr()
    import ray
    from flwr.server.superlink.fleet.vce.backend import raybackend
    if ray.is_initialized():
        yield
        return
    # what flwr's backend gives its workers when it starts Ray: the driver's sys.path, so they unpickle the apps
    path = os.environ.get("PYTHONPATH")
    pythonpath = os.pathsep.join(sys.path) + (os.pathsep + path if path else "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **_ray_init_args(cpus))
    real = raybackend.ray
    raybackend.ray = _KeepRunning(ray)
    try:
        yield
    finally:
        raybackend.ray = real
        ray.shutdown()


def _simulate(server_app, client_app, num_supernodes: int, cpus: int = 2) -> None:
    from flwr.simulation import run_simulation
    path = os.environ.get("PYTHONPATH")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_supernodes,
                           backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                           "init_args": _ray_init_args(cpus)})
    finally:   # flwr appends sys.path to PYTHONPATH on every call
        if path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = path


def run_flower(client_app, strategy, initial_model: torch.nn.Module, *, num_supernodes: int, num_rounds: int,
               evaluate: Callable[[torch.nn.Module], float], cpus: int = 2) -> list[float]:
    """Run a federation in Flower's simulation; the central `evaluate(model)` after every round (round 0, the
    initial model, left out)."""
    _flwr()
    import copy

    from flwr.app import ArrayRecord, MetricRecord
    from flwr.serverapp import ServerApp
    history: dict[int, float] = {}
    template = copy.deepcopy(initial_model)

    def central(server_round, arrays):
        template.load_state_dict(arrays.to_torch_state_dict())
        history[server_round] = float(evaluate(template.eval()))
        return MetricRecord({"accuracy": history[server_round]})

    server = ServerApp()

    @server.main()
    def main(grid, context):
        strategy.start(grid=grid, initial_arrays=ArrayRecord(initial_model.state_dict()), num_rounds=num_rounds,
                       evaluate_fn=central)

    _simulate(server, client_app, num_supernodes, cpus)
    if len(history) < num_rounds + 1:
        raise RuntimeError(f"the Flower simulation stopped after {max(len(history) - 1, 0)} of {num_rounds} rounds")
    return [history[r] for r in range(1, num_rounds + 1)]


def audit_flower(client_app, strategy_factory: Callable[[], object], initial_model: torch.nn.Module, *,
                 num_supernodes: int, num_rounds: int, evaluate: Callable[[torch.nn.Module], float],
                 malicious, mod=None) -> dict:
    """A user's ClientApp and strategy in Flower's simulation, without and with malicious clients (`mod`,
    default: `scaling_mod(malicious, -10)`, sign flipping): accuracy per round of both runs and the drop.
    `strategy_factory` makes a fresh strategy for each run (a strategy keeps state between rounds)."""
    mod = mod or scaling_mod(malicious, -10.0)
    run = dict(num_supernodes=num_supernodes, num_rounds=num_rounds, evaluate=evaluate)
    with ray_session():
        clean = run_flower(client_app, strategy_factory(), initial_model, **run)
        attacked = run_flower(with_mods(client_app, mod), strategy_factory(), initial_model, **run)
    return {"clean": clean, "attacked": attacked, "drop": clean[-1] - attacked[-1],
            "malicious": sorted(int(p) for p in malicious), "strategy": type(strategy_factory()).__name__}


def recording_mod(folder):
    """A client mod that saves every global model a client receives (TRAIN: the model after the previous round;
    EVALUATE: after this round) as a weights-only state dict under `folder`, so the driver can evaluate the
    rounds of a ServerApp it does not control."""
    folder = str(folder)

    def mod(msg, context, call_next):
        from flwr.app import MessageType
        kind = msg.metadata.message_type
        rec = next(iter(msg.content.array_records.values()), None)
        if rec is not None and kind in (MessageType.TRAIN, MessageType.EVALUATE):
            config = next(iter(msg.content.config_records.values()), {})
            rnd = config.get("server-round")
            if rnd is not None:
                done = int(rnd) - 1 if kind == MessageType.TRAIN else int(rnd)   # rounds finished in this model
                pid = int(context.node_config.get("partition-id", 0))
                state = {k: torch.from_numpy(np.array(v)) for k, v in zip(rec.keys(), rec.to_numpy_ndarrays())}
                tmp = os.path.join(folder, f".round-{done}-p{pid}.tmp")
                torch.save(state, tmp)
                os.replace(tmp, os.path.join(folder, f"round-{done}-p{pid}.pt"))
        return call_next(msg, context)
    return mod


def audit_flower_app(server_app, client_app, model: torch.nn.Module, *, num_supernodes: int, malicious,
                     evaluate: Callable[[torch.nn.Module], float], mod=None, cpus: int = 2) -> dict:
    """A user's own ServerApp and ClientApp, run unchanged in Flower's simulation without and with malicious
    clients (`mod`, default sign flipping at -10): the accuracy of the global model after every round, read
    from the models the clients receive (the last round only when the strategy sends evaluation messages).
    `model` is a network of the federation's architecture to load them into."""
    import copy
    import tempfile
    _flwr()
    mod = mod or scaling_mod(malicious, -10.0)
    out = {}
    with ray_session(cpus):   # both runs on one Ray start
        for name, mods in (("clean", []), ("attacked", [mod])):
            with tempfile.TemporaryDirectory(prefix="mlwarden-flower-") as folder:
                _simulate(server_app, with_mods(client_app, recording_mod(folder), *mods), num_supernodes, cpus)
                rounds: dict[int, str] = {}
                for f in sorted(os.listdir(folder)):
                    if f.startswith("round-") and f.endswith(".pt"):
                        rounds.setdefault(int(f.split("-")[1]), os.path.join(folder, f))
                curve = []
                for r in sorted(rounds):
                    if r == 0:
                        continue
                    net = copy.deepcopy(model)
                    net.load_state_dict(torch.load(rounds[r], weights_only=True))
                    curve.append(float(evaluate(net.eval())))
                out[name] = curve
    if not out["clean"] or not out["attacked"]:
        raise UserError("the Flower run sent no global model after round 1 to its clients; use at least 2 rounds or "
                        "a strategy that evaluates on the clients (fraction_evaluate > 0)")
    out["drop"] = out["clean"][-1] - out["attacked"][-1]
    out["malicious"] = sorted(int(p) for p in malicious)
    return out
