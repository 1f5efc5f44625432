import torch

from mlwarden.threats.tricking.common import eval_points, predict


def points(data, n=200, seed=0):
    return eval_points(data, n, seed)


def acc(model, x, y) -> float:
    return float((predict(model, x) == y).float().mean())


def in_ball(x_adv, x, eps, norm="linf"):
    d = (x_adv - x).flatten(1)
    n = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    return bool((n <= eps + 1e-5).all()) and bool((x_adv >= 0).all() and (x_adv <= 1).all())


def seeded(seed=0):
    torch.manual_seed(seed)
