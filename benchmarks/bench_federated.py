"""Federated learning, side by side with Flower (flwr 1.42), in one run:

A. our aggregation rules against Flower's (flwr.server.strategy.aggregate: aggregate, aggregate_krum,
   aggregate_median, aggregate_trimmed_avg, aggregate_bulyan) on the same 11 client updates (2 outliers) of 2.4k,
   100k and 1M parameters, given as Flower gives them: per client a list of float32 arrays (an MLP's layers; also
   float64). Our time includes what our Flower strategy does around the rule: the arrays into the (K, P) float64
   matrix (federated.flower.updates_matrix), the weights into a tensor, the result back into arrays. Each rule:
   5 runs, each the best of 3 calls a side, the two sides alternating which goes first; the ratio ours / Flower
   per run, its median and range;
B. the in-process simulation against Flower's simulation (Ray) of the same federation (6 clients, 5 rounds of
   one local epoch, digits softmax regression): accuracy per round and wall time;
C. the attack x aggregator table: final test accuracy (mean of 3 seeds) with 20% malicious clients of 11, IID
   and non-IID (Dirichlet alpha 0.5); model replacement reports backdoor accuracy right after its round;
D. the settings the tests assert on (sign flipping against 6 clients; A Little Is Enough against Krum).

Usage: python benchmarks/bench_federated.py [A|B|C ...] (default all)."""
from __future__ import annotations

import os
import sys
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):   # numpy (Flower's side) one thread too
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from mlwarden.audit.demo import federated_client_recipe  # noqa: E402
from mlwarden.core.registry import all_threats, get_defense  # noqa: E402
from mlwarden.core.stats import mean_interval  # noqa: E402
from mlwarden.federated.aggregate import RoundInfo, fedavg  # noqa: E402
from mlwarden.federated.recipe import FederatedRecipe  # noqa: E402
from mlwarden.federated.simulation import simulate  # noqa: E402
from mlwarden.io.datasets import load_builtin  # noqa: E402
from mlwarden.threats.federated.common import malicious_ids  # noqa: E402


def best(fn, reps=5):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times)


RUNS, REPS = 5, 3
LAYERS = {2_410: [(32, 64), (32,), (10, 32), (10,)],               # the digits MLP
          100_000: [(125, 784), (125,), (15, 125)],
          1_000_000: [(1000, 784), (1000,), (215, 1000)]}


def part_a():
    from flwr.server.strategy import aggregate as fa

    from mlwarden.federated.flower import from_vector, updates_matrix
    print(f"## A. aggregation rules against Flower's, 11 clients (2 outliers), Flower's input (per client a list of "
          f"arrays); ours includes converting it to our matrix and back; {RUNS} runs of best-of-{REPS}, numpy and "
          f"torch one thread each\n")
    print("| rule | parameters | dtype | max abs difference | ours ms (median) | Flower ms (median) | "
          "ours / Flower, median | range |")
    print("|---|---|---|---|---|---|---|---|")

    def rule(name, **kw):
        d = get_defense(name)
        return d.rule(d.Params(**kw))
    for p, shapes in LAYERS.items():
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(0)
            clients = [[(0.05 + 0.1 * rng.standard_normal(s)).astype(dtype) for s in shapes] for _ in range(11)]
            for c in clients[:2]:
                for a in c:
                    a *= -3
            counts = [int(n) for n in rng.integers(20, 200, 11)]
            res = [(c, n) for c, n in zip(clients, counts)]
            info = RoundInfo(0, 11, 11.0, torch.Generator().manual_seed(0))

            def ours(fn):
                def run():
                    u = updates_matrix(clients)
                    w = torch.tensor(counts, dtype=u.dtype)
                    return from_vector(fn(u, w, info), clients[0])
                return run
            cases = [("fedavg", ours(fedavg), lambda: fa.aggregate(res)),
                     ("krum f=2", ours(rule("krum", f=2)), lambda: fa.aggregate_krum(res, 2, 0)),
                     ("multi-krum f=2 m=5", ours(rule("multi-krum", f=2, keep=5)),
                      lambda: fa.aggregate_krum(res, 2, 5)),
                     ("median", ours(rule("median")), lambda: fa.aggregate_median(res)),
                     ("trimmed mean 0.2", ours(rule("trimmed-mean", beta=0.2)),
                      lambda: fa.aggregate_trimmed_avg(res, 0.2)),
                     ("bulyan f=2", ours(rule("bulyan", f=2)),
                      lambda: fa.aggregate_bulyan(list(res), 2, fa.aggregate_krum, to_keep=0))]
            for name, ours_fn, theirs_fn in cases:
                a, b = ours_fn(), theirs_fn()            # warm-up, and the results compared
                diff = max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b))
                t_ours, t_theirs = [], []
                for r in range(RUNS):
                    sides = [(ours_fn, t_ours), (theirs_fn, t_theirs)]
                    for fn, times in (sides if r % 2 == 0 else sides[::-1]):
                        times.append(best(fn, REPS)[1])
                ratios = sorted(o / t for o, t in zip(t_ours, t_theirs))
                print(f"| {name} | {p:,} | {np.dtype(dtype).name} | {diff:.1e} | {1e3 * np.median(t_ours):.2f} | "
                      f"{1e3 * np.median(t_theirs):.2f} | {np.median(ratios):.2f}x | "
                      f"{ratios[0]:.2f}-{ratios[-1]:.2f}x |", flush=True)
            g = [a.copy() for a in clients[0]]
            u = updates_matrix(clients)
            _, t_sub = best(lambda: u.sub_(updates_matrix([g])[0]), REPS)
            print(f"| (our strategy also subtracts the global model from every row) | {p:,} | "
                  f"{np.dtype(dtype).name} | | {1e3 * t_sub:.2f} | | | |")
    print()


def part_b(data):
    from mlwarden.federated import flower
    print("## B. in-process simulation against Flower's simulation of the same federation\n")
    fed = FederatedRecipe.of(federated_client_recipe(), clients=6, rounds=5)
    h, t_ours = best(lambda: simulate(fed, data.x_train, data.y_train, 10, seed=0, test=(data.x_test, data.y_test)),
                     reps=3)
    torch.manual_seed(0)
    init = fed.local().make_model(data.input_shape, 10)
    app = flower.client_app(fed, data.x_train, data.y_train, 10, 6, seed=0)

    stamps = []

    def evaluate(m):
        stamps.append(time.perf_counter())
        with torch.no_grad():
            return float((m(data.x_test).argmax(1) == data.y_test).float().mean())
    t0 = time.perf_counter()
    theirs = flower.run_flower(app, flower.strategy("fedavg", fraction_evaluate=0.0, min_train_nodes=6,
                                                    min_available_nodes=6), init, num_supernodes=6, num_rounds=5,
                               evaluate=evaluate)
    t_flower = time.perf_counter() - t0
    print("| | accuracy per round | wall time (s) |")
    print("|---|---|---|")
    print(f"| mlwarden, in process | {', '.join(f'{a:.4f}' for a in h.accuracy)} | {t_ours:.2f} |")
    print(f"| Flower simulation (Ray, 2 CPUs), mlwarden's clients | {', '.join(f'{a:.4f}' for a in theirs)} | "
          f"{t_flower:.1f} |")
    steady = (stamps[-1] - stamps[-5]) / 4          # rounds 2-5, Ray already up
    print(f"\nlargest per-round difference {max(abs(a - b) for a, b in zip(h.accuracy, theirs)):.1e}; "
          f"Flower / in process: {t_flower / t_ours:.0f}x in all (Flower's time includes starting Ray), "
          f"{steady / (t_ours / 5):.1f}x per round once Ray is up ({1e3 * steady:.0f} ms against "
          f"{1e3 * t_ours / 5:.0f} ms)\n")


RULES = ["fedavg", "krum", "multi-krum", "median", "trimmed-mean", "bulyan", "fltrust", "norm-clipping", "dp-fedavg",
         "secure-aggregation"]
ATTACKS = ["sign-flipping", "client-label-flipping", "a-little-is-enough", "inner-product-manipulation",
           "fang-tailored", "model-replacement"]


def part_c(data, seeds=3, clients=11, fraction=0.2):
    threats = all_threats()
    for part in ("iid", "dirichlet"):
        print(f"## C. final test accuracy, {clients} clients ({part}), {round(fraction * clients)} malicious, "
              f"mean of {seeds} seeds (model replacement: backdoor accuracy right after its round)\n")
        print("| attack | " + " | ".join(RULES) + " |")
        print("|---|" + "---|" * len(RULES))
        rows = {"no attack": []}
        t0 = time.perf_counter()
        for rule in RULES:
            params = {"noise_multiplier": 0.1, "clip": 1.0} if rule == "dp-fedavg" else {}
            fed = FederatedRecipe.of(federated_client_recipe(), clients=clients, rounds=5, partition=part,
                                     aggregator=rule, aggregator_params=params)
            clean = [simulate(fed, data.x_train, data.y_train, 10, seed=s, test=(data.x_test, data.y_test))
                     for s in range(seeds)]
            rows["no attack"].append(mean_interval([h.accuracy[-1] for h in clean]))
            for name in ATTACKS:
                t = threats[name]
                p = t.params_for("quick", {"fractions": [fraction], "seeds": seeds})
                ctx = type("Ctx", (), {"recipe": fed, "data": data, "seed": 0})()
                vals = []
                for s in range(seeds):
                    adv = t.adversary(ctx, p, malicious_ids(clients, fraction, s))
                    h = simulate(fed, data.x_train, data.y_train, 10, seed=s, test=(data.x_test, data.y_test),
                                 adversary=adv)
                    vals.append(h.backdoor[t.at(ctx, p)] if name == "model-replacement" else h.accuracy[-1])
                rows.setdefault(name, []).append(mean_interval(vals))
        for name, cells in rows.items():
            print(f"| {name} | " + " | ".join(f"{100 * m:.1f}" for m, _, _ in cells) + " |")
        print(f"\n({time.perf_counter() - t0:.0f} s; dp-fedavg at noise multiplier 0.1, clip 1.0)\n")


def part_d(data, seeds=3):
    """The settings the tests assert on, with their numbers and intervals."""
    from mlwarden.core.recipe import BUILTIN_RECIPES
    from mlwarden.threats.federated.alie import LittleIsEnough, alie_z
    from mlwarden.threats.federated.sign_flipping import Scaling
    test = (data.x_test, data.y_test)

    def fmt(vals):
        m, lo, hi = mean_interval(vals)
        return f"{100 * m:.1f}% ({100 * max(lo, 0):.1f}-{100 * min(hi, 1):.1f})"
    print(f"## D. the tests' settings (mean of {seeds} seeds, Student-t 95% interval)\n")
    print("6 clients, 5 rounds, one local epoch, one client sends its update x -10:\n")
    print("| rule | clean | attacked |")
    print("|---|---|---|")
    for rule in ("fedavg", "krum", "median", "trimmed-mean"):
        fed = FederatedRecipe.of(federated_client_recipe(), clients=6, rounds=5, aggregator=rule)
        clean = [simulate(fed, data.x_train, data.y_train, 10, seed=s, test=test).accuracy[-1] for s in range(seeds)]
        att = [simulate(fed, data.x_train, data.y_train, 10, seed=s, test=test,
                        adversary=Scaling(malicious_ids(6, 1 / 6, s), -10.0)).accuracy[-1] for s in range(seeds)]
        print(f"| {rule} | {fmt(clean)} | {fmt(att)} |")
    mlp = BUILTIN_RECIPES["mlp"].with_(epochs=1, lr=0.01, batch_size=8)
    print(f"\n20 clients (MLP), 4 malicious, Krum f = 4, 4 seeds; the paper's z for n = 20, m = 4 is "
          f"{alie_z(20, 4):.3f}:\n")
    print("| attack | final accuracy |")
    print("|---|---|")
    fed = FederatedRecipe.of(mlp, clients=20, rounds=5, aggregator="krum", aggregator_params={"f": 4})
    runs = {"no attack": lambda s: None, "sign flipping x -10": lambda s: Scaling(malicious_ids(20, 0.2, s), -10.0),
            f"A Little Is Enough, z = {alie_z(20, 4):.3f}": lambda s: LittleIsEnough(malicious_ids(20, 0.2, s), None,
                                                                                        "full"),
            "A Little Is Enough, z = 1": lambda s: LittleIsEnough(malicious_ids(20, 0.2, s), 1.0, "full")}
    for name, adv in runs.items():
        vals = [simulate(fed, data.x_train, data.y_train, 10, seed=s, test=test, adversary=adv(s)).accuracy[-1]
                for s in range(4)]
        print(f"| {name} | {fmt(vals)} |")
    print()


if __name__ == "__main__":
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    parts = sys.argv[1:] or ["A", "B", "C", "D"]
    data = load_builtin("digits", seed=0)
    if "A" in parts:
        part_a()
    if "B" in parts:
        part_b(data)
    if "C" in parts:
        part_c(data)
    if "D" in parts:
        part_d(data)
