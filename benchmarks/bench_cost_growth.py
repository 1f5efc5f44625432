"""How cost grows with model size: the primitive costs every threat is made of (a forward pass, a forward
and backward pass, a training epoch), for the digits MLP, the digits CNN and a ResNet-18-shaped network
on 3x32x32 inputs (11.2M parameters; random data: only time is measured), on one device, and what they
make of a quick-profile audit's heaviest parts:

- an evasion attack of S gradient steps on n points costs S * n forward-backward passes
  (PGD-40 on the quick profile's 200 points: 8,000; APGD-100: 20,000; FGSM: 200);
- a score-based black-box attack of Q queries on n points costs Q * n forward passes (Square 1,000 on
  200 points: 200,000);
- membership inference trains R reference models for E epochs on half the pool (8 x 40 epochs).

Usage: bench_cost_growth.py [cpu|cuda] [threads]"""
from __future__ import annotations

import sys
import time

import torch
from torch import nn

from mlwarden.core.zoo import SmallCNN, MLP

DEVICE = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cpu")
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + self.skip(x))


def resnet18(n_classes=10):
    """ResNet-18's shape for 32x32 inputs (He et al. 2016; the CIFAR variant: a 3x3 stem, no max-pool)."""
    layers, cin = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()], 64
    for cout, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
        layers.append(Block(cin, cout, stride))
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, n_classes))


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeat=3):
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def measure(name, model, shape, batch=200):
    model = model.to(DEVICE).eval()
    x = torch.rand(batch, *shape, device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)

    def fwd():
        with torch.no_grad():
            model(x)

    def grad():
        xr = x.clone().requires_grad_(True)
        nn.functional.cross_entropy(model(xr), y).backward()

    train_model = model.train()
    opt = torch.optim.Adam(train_model.parameters(), 1e-3)
    xt = torch.rand(2500, *shape, device=DEVICE)
    yt = torch.randint(0, 10, (2500,), device=DEVICE)

    def epoch():
        for i in range(0, 2500, 64):
            opt.zero_grad()
            nn.functional.cross_entropy(train_model(xt[i:i + 64]), yt[i:i + 64]).backward()
            opt.step()
    t_fwd, t_grad = timed(fwd) / batch, timed(grad) / batch
    t_epoch = timed(epoch, repeat=1)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    return {"model": name, "params": params, "fwd_ms": 1e3 * t_fwd, "grad_ms": 1e3 * t_grad, "epoch_s": t_epoch,
            "pgd40_s": 8_000 * t_grad, "apgd100_s": 20_000 * t_grad, "square1000_s": 200_000 * t_fwd,
            "mia8x40_s": 8 * 40 * t_epoch}


def main():
    rows = [measure("digits MLP", MLP((1, 8, 8), 10), (1, 8, 8)),
            measure("digits CNN", SmallCNN((1, 8, 8), 10), (1, 8, 8)),
            measure("ResNet-18 shape, 3x32x32", resnet18(), (3, 32, 32))]
    print(f"device {DEVICE} ({torch.cuda.get_device_name(DEVICE) if DEVICE.type == 'cuda' else 'CPU'}), "
          f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}")
    print(f"{'model':<26} | {'params':>10} | {'fwd/pt ms':>9} | {'fwd+bwd/pt ms':>13} | {'epoch 2.5k s':>12} | "
          f"{'PGD-40 s':>8} | {'APGD-100 s':>10} | {'Square-1k s':>11} | {'MIA 8x40 s':>10}")
    for r in rows:
        print(f"{r['model']:<26} | {r['params']:>10,} | {r['fwd_ms']:9.4f} | {r['grad_ms']:13.4f} | "
              f"{r['epoch_s']:12.2f} | {r['pgd40_s']:8.1f} | {r['apgd100_s']:10.1f} | {r['square1000_s']:11.1f} | "
              f"{r['mia8x40_s']:10.0f}")


if __name__ == "__main__":
    main()
