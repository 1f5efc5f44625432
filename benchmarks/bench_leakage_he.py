"""Gradient leakage and CKKS secure aggregation (issue: federated learning II), measured in one run:

A. reconstruction quality per batch size: DLG (L-BFGS gradient matching with iDLG labels) on the untrained
   sigmoid MLP of the DLG paper's kind, the analytic first-layer attack on the ReLU MLP; from one client's
   update and from the CKKS sum of 8 clients' updates; PSNR with intervals, share recovered at >= 25 dB, labels;
B. CKKS aggregation per round for 2.4k, 100k and 1M parameters and 8 clients against plaintext: time to
   encrypt (per client), add, decrypt; bytes per client; largest error;
C. encrypted inference (serve --encrypted) for the digits softmax regression and a square-activation MLP
   against plaintext: time and bytes per sample, agreement;
D. the published setups' shapes: DLG against the sigmoid LeNet, Inverting Gradients against a ReLU CNN,
   FedSGD and 5 local steps.
No peer runs beside them: AIJack 0.0.1b2 fails to build here (C++ extension) and breaching 0.1.2 imports
torchvision, which would replace the pinned CPU torch."""
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
                    update = [t / clients for t in secure_sum(parts, {})] if clients > 1 else parts[0]   # the mean
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


def part_d(data, trials=10):
    """The published setups' shapes on digits: DLG against the sigmoid LeNet (Zhu et al. 2019), Inverting
    Gradients against a ReLU CNN (Geiping et al. 2020), one update, FedSGD and 5 local steps."""
    from mlwarden.threats.federated.inverting_gradients import inverting_gradients
    print(f"## D. published shapes (digits, {trials} updates each)\n")
    print("| attack | network | local steps | batch | PSNR dB (95% CI) | recovered >= 25 dB | s / update |")
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(1)
    runs = [("DLG", "sigmoid LeNet", zoo.sigmoid_lenet, 1, 1), ("IG", "sigmoid LeNet", zoo.sigmoid_lenet, 1, 1),
            ("IG", "ReLU CNN", zoo.cnn, 1, 1), ("IG", "ReLU CNN", zoo.cnn, 1, 4), ("IG", "ReLU CNN", zoo.cnn, 5, 1)]
    for attack, net, factory, steps, b in runs:
        ps, rec, t0 = [], 0, time.perf_counter()
        for t in range(trials):
            torch.manual_seed(t)
            model = factory(data.input_shape, 10)
            pick = torch.randperm(len(data.x_train), generator=g)[:b]
            xs, ys = data.x_train[pick], data.y_train[pick]
            u = client_update(model, xs, ys, steps, 0.1)
            labels = idlg_labels(u, b, 10)
            out = dlg(model, u, labels, xs.shape, t, 300) if attack == "DLG" else \
                inverting_gradients(model, u, labels, xs.shape, t, 400)
            p = psnr(match(xs, out.clamp(0, 1)), xs, 1.0)
            ps += p.tolist()
            rec += int((p >= 25).sum())
        mean, lo, hi = mean_interval(ps)
        clo, chi = clopper_pearson(rec, len(ps))
        print(f"| {attack} | {net} | {steps} | {b} | {mean:.1f} ({lo:.1f}-{hi:.1f}) | {100 * rec / len(ps):.0f}% "
              f"({100 * clo:.0f}-{100 * chi:.0f}), n={len(ps)} | {(time.perf_counter() - t0) / trials:.2f} |")
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


def part_c(data):
    """Encrypted inference through the real app (in process, no network) against plaintext, 450 test digits."""
    import unittest.mock as mock

    from fastapi.testclient import TestClient

    from mlwarden.core.recipe import BUILTIN_RECIPES
    from mlwarden.core.target import TorchTarget
    from mlwarden.io.encrypted import EncryptedClient
    from mlwarden.serve.app import build_app
    from mlwarden.serve.guards import GuardConfig
    print("## C. encrypted inference (serve --encrypted) against plaintext, 450 digits in one request\n")
    print("| model | levels | ring, scale | encrypted: ms / sample | plaintext: ms / sample | ratio | "
          "bytes sent / sample | argmax agreement | largest logit error |")
    print("|---|---|---|---|---|---|---|---|---|")
    x = data.x_test
    for name, depth in (("logreg", 1), ("square-mlp", 3)):
        model = BUILTIN_RECIPES[name].fit(data.x_train, data.y_train, 10, seed=0)
        tc = TestClient(build_app(TorchTarget(model, 10, data.input_shape), data.space, "m",
                                  GuardConfig(encrypted=True, max_batch=4096)))

        def post(url, **kw):
            kw.pop("timeout", None)
            return tc.post(url.replace("http://testserver", ""), **kw)
        client = EncryptedClient("http://testserver/v2/models/m", depth=depth)
        with mock.patch("httpx.post", post):
            t0 = time.perf_counter()
            z = client.logits(x.numpy())
            t_enc = time.perf_counter() - t0
        with torch.no_grad():
            t0 = time.perf_counter()
            ref = model(x).double().numpy()
            t_plain = time.perf_counter() - t0
        scale = 40 if 120 + depth * 40 <= 218 else 30
        print(f"| {name} | {depth} | 8192, 2^{scale} | {1e3 * t_enc / len(x):.2f} | {1e3 * t_plain / len(x):.4f} | "
              f"{t_enc / t_plain:.0f}x | {client.sent_bytes / len(x):,.0f} | "
              f"{100 * float((z.argmax(1) == ref.argmax(1)).mean()):.1f}% | {float(abs(z - ref).max()):.1e} |")
    print()


if __name__ == "__main__":
    import sys
    data = load_builtin("digits", seed=0)
    parts = sys.argv[1:] or ["A", "B", "C", "D"]
    if "A" in parts:
        part_a(data)
    if "B" in parts:
        part_b()
    if "C" in parts:
        part_c(data)
    if "D" in parts:
        part_d(data)
