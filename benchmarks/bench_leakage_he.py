"""Gradient leakage and CKKS secure aggregation (issue: federated learning II), measured in one run:

A. reconstruction quality per batch size: DLG (L-BFGS gradient matching with iDLG labels) on the untrained
   sigmoid MLP of the DLG paper's kind, the analytic first-layer attack on the ReLU MLP; from one client's
   update and from the CKKS sum of 8 clients' updates; PSNR with intervals, share recovered at >= 25 dB, labels;
B. CKKS aggregation per round for 2.4k, 100k and 1M parameters and 8 clients against plaintext: time to
   encrypt (per client), add, decrypt; bytes per client; largest error.
No peer installs here: breaching and AIJack were not tried (no network in the benchmark machine's CI)."""
from __future__ import annotations

import time

import torch

torch.set_num_threads(1)

from mlwarden.core import zoo  # noqa: E402
from mlwarden.core.stats import clopper_pearson, mean_interval  # noqa: E402
from mlwarden.federated.ckks import CKKS  # noqa: E402
from mlwarden.io.datasets import load_builtin  # noqa: E402
from mlwarden.threats.federated.analytic import analytic, first_linear  # noqa: E402
from mlwarden.threats.federated.dlg import dlg  # noqa: E402
from mlwarden.threats.federated.idlg import idlg_labels  # noqa: E402
from mlwarden.threats.federated.leakage import client_update, label_hits, match, psnr, secure_sum, ssim  # noqa: E402


def part_a(data, trials=10):
    print(f"## A. reconstruction from one update and from the CKKS sum of 8 (digits, {trials} batches each)\n")
    print("| attack | server sees | batch per client | PSNR dB (95% CI) | SSIM | recovered >= 25 dB | labels | s / batch |")
    print("|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for attack, factory in (("DLG", zoo.sigmoid_mlp), ("analytic FC", zoo.mlp)):
        for clients in (1, 8):
            for b in (1, 2, 4, 8):
                ps, ss, rec, hits, t0 = [], [], 0, 0, time.perf_counter()
                for t in range(trials):
                    torch.manual_seed(t)
                    model = factory(data.input_shape, 10)
                    pick = torch.randperm(len(data.x_train), generator=g)[:b * clients]
                    xs, ys = data.x_train[pick], data.y_train[pick]
                    parts = [client_update(model, xs[i * b:(i + 1) * b], ys[i * b:(i + 1) * b]) for i in range(clients)]
                    update = secure_sum(parts, {}) if clients > 1 else parts[0]
                    labels = idlg_labels(update, b * clients, 10)
                    hits += label_hits(ys, labels)
                    out = dlg(model, update, labels, xs.shape, t, 100) if attack == "DLG" else \
                        analytic(update, first_linear(model), xs.shape)
                    m = match(xs, out.clamp(0, 1))
                    p = psnr(m, xs, 1.0)
                    ps += p.tolist()
                    ss += ssim(m, xs, 1.0).tolist()
                    rec += int((p >= 25).sum())
                mean, lo, hi = mean_interval(ps)
                n = len(ps)
                clo, chi = clopper_pearson(rec, n)
                print(f"| {attack} | {'one update' if clients == 1 else 'sum of 8 (CKKS)'} | {b} | {mean:.1f} "
                      f"({lo:.1f}-{hi:.1f}) | {sum(ss) / n:.3f} | {100 * rec / n:.0f}% ({100 * clo:.0f}-{100 * chi:.0f}), "
                      f"n={n} | {100 * hits / n:.0f}% | {(time.perf_counter() - t0) / trials:.2f} |")
    print()


def part_b():
    print("## B. CKKS secure aggregation of 8 clients (poly modulus 8192, scale 2^40) against plaintext\n")
    print("| parameters | ciphertexts / client | bytes / client (plaintext) | encrypt s / client | add s | "
          "decrypt s | plaintext sum s | largest error |")
    print("|---|---|---|---|---|---|---|---|")
    for p in (2_410, 100_000, 1_000_000):
        u = 0.01 * torch.randn(8, p, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        t0 = time.perf_counter()
        plain = u.sum(0)
        tp = time.perf_counter() - t0
        total, c = CKKS().secure_sum(u)
        print(f"| {p:,} | {c['ciphertexts_per_client']} | {c['bytes_per_client']:,} ({c['plaintext_bytes_per_client']:,}; "
              f"{c['bytes_per_client'] / c['plaintext_bytes_per_client']:.0f}x) | {c['encrypt_s_per_client']:.3f} | "
              f"{c['sum_s']:.3f} | {c['decrypt_s']:.3f} | {tp:.5f} | {float((total - plain).abs().max()):.1e} |")
    print()


if __name__ == "__main__":
    data = load_builtin("digits", seed=0)
    part_a(data)
    part_b()
