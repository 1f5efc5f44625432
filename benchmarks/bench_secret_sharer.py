"""The Secret Sharer's qualitative findings (Carlini et al. 2019), re-measured on mlwarden's character LM:
memorization happens early in training and is not a symptom of overfitting. Canaries inserted 0 (control),
1, 4 and 16 times into 100,000 characters of standard-library docstrings; after every epoch: train and
test loss (bits per character), each canary's exact exposure (|R| = 10^6) and whether shortest-path
search extracts it."""
from __future__ import annotations

import time

import torch

torch.set_num_threads(1)

from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.text.corpus import load_text  # noqa: E402
from mlwarden.threats.memorization.canaries import insert, make_canaries  # noqa: E402
from mlwarden.threats.memorization.exposure import exact_exposure  # noqa: E402
from mlwarden.threats.memorization.extraction import extract  # noqa: E402

EPOCHS = 8
COUNTS = [0, 1, 4, 16]


def bits(model, x, y):
    with torch.no_grad():
        model.eval()
        out = torch.nn.functional.cross_entropy(model(x), y).item() / 0.6931
        model.train()
        return out


def main():
    base = load_text("stdlib-docstrings", 100_000)
    corpus = base.corpus
    canaries = make_canaries(COUNTS, 6, seed=0)
    data = corpus.dataset("stdlib+canaries", insert(corpus.train, canaries, seed=0))
    sub = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))[:20000]
    rows = []

    def on_epoch(epoch, model):
        model.eval()
        row = {"epoch": epoch + 1, "train": bits(model, data.x_train[sub], data.y_train[sub]),
               "test": bits(model, data.x_test, data.y_test)}
        for c in canaries:
            e, _ = exact_exposure(model, corpus, c.prefix, c.secret)
            row[c.insertions] = (e, extract(model, corpus, c.prefix, c.secret, 5000).extracted)
        rows.append(row)
        model.train()

    t0 = time.perf_counter()
    BUILTIN_RECIPES["charlm"].with_(epochs=EPOCHS).fit(data.x_train, data.y_train, data.n_classes, seed=0,
                                                       on_epoch=on_epoch)
    print(f"{len(data.x_train)} training windows, {EPOCHS} epochs, {time.perf_counter() - t0:.0f}s "
          "(exposure in bits of 19.9; * = extracted)")
    print("epoch | train b/c | test b/c | gap   | " + " | ".join(f"{k:>2}x" .rjust(6) for k in COUNTS))
    best_test = min(r["test"] for r in rows)
    for r in rows:
        cells = [f"{r[k][0]:5.1f}{'*' if r[k][1] else ' '}" for k in COUNTS]
        mark = "  <- lowest test loss" if r["test"] == best_test else ""
        print(f"{r['epoch']:>5} | {r['train']:9.3f} | {r['test']:8.3f} | {r['test'] - r['train']:5.2f} | "
              + " | ".join(cells) + mark)


if __name__ == "__main__":
    main()
