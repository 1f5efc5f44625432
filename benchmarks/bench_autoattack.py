"""Our cascade (standard profile) vs AutoAttack-standard (torchattacks port) on an adversarially
trained digits MLP. Goal (issue 2): robust accuracy gap at most 0.5 point."""
from __future__ import annotations

import torch
import torchattacks

from common import robust_acc, setup, timed
from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.threats.tricking.pgd import pgd
from mlwarden.threats.tricking.whitebox_cascade import WhiteBoxCascade

EPS = 0.1
N = 200


def adversarially_trained(data):
    def pgd_batch(model, xb, yb):
        model.eval()
        adv = pgd(model, xb, yb, EPS, "linf", 0.0, 1.0, steps=10)
        model.train()
        return torch.cat([xb, adv]), torch.cat([yb, yb])
    return BUILTIN_RECIPES["mlp"].with_(epochs=30).fit(data.x_train, data.y_train, 10, seed=0,
                                                       batch_transform=pgd_batch)


def main():
    import pathlib
    import tempfile
    data, _, x, y = setup(N)
    model, t_train = timed(lambda: adversarially_trained(data))
    for p in model.parameters():
        p.requires_grad_(False)
    print(f"PGD-AT digits MLP (eps={EPS}, 10-step PGD, 30 epochs, {t_train:.0f}s); clean acc "
          f"{robust_acc(model, x, y):.3f} on n={N}")
    threat = WhiteBoxCascade()
    ctx = Context(target=TorchTarget(model, 10, (1, 8, 8)), data=data,
                  evidence_dir=pathlib.Path(tempfile.mkdtemp()) / "evidence" / "cascade")
    params = threat.params_for("standard", {"n_samples": N, "eps": EPS})
    torch.manual_seed(0)
    f, t_ours = timed(lambda: threat.run(ctx, params))
    ours = f.metric("robust_accuracy")
    aa = torchattacks.AutoAttack(model, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0)
    adv, t_aa = timed(lambda: aa(x, y))
    theirs = robust_acc(model, adv, y)
    print(f"mlwarden cascade (standard): robust {ours.value:.3f} (95% CI {ours.ci_low:.3f}-{ours.ci_high:.3f}), "
          f"status {f.status.value}, {t_ours:.1f}s; checks fired: {[c.name for c in f.checks if c.fired]}")
    print(f"AutoAttack standard (torchattacks): robust {theirs:.3f}, {t_aa:.1f}s")
    print(f"gap (ours - AutoAttack): {100 * (ours.value - theirs):+.1f} points; time ratio {t_ours / t_aa:.2f} "
          "(ours also computes the security curve and the masking checks)")


if __name__ == "__main__":
    main()
