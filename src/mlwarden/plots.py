"""Evidence figures: image grids and security curves, as PNG files (matplotlib, no display)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .core.files import png, write_file  # noqa: E402


def _show(ax, img: torch.Tensor, low: float, high: float):
    img = img.detach().cpu()
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img.permute(1, 2, 0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    ax.imshow(img.numpy(), cmap="gray" if img.ndim == 2 else None, vmin=low, vmax=high)
    ax.set_xticks([])
    ax.set_yticks([])


def image_row(path, images, labels, low, high, title=""):
    fig, axes = plt.subplots(1, len(images), figsize=(1.3 * len(images), 1.6))
    for ax, img, lab in zip(axes, images, labels):
        _show(ax, img, low, high)
        ax.set_title(lab, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    write_file(path, png(fig, dpi=110))   # never savefig(path): a link planted there is replaced, not written through
    plt.close(fig)


def two_rows(path, top, bottom, bottom_titles, low, high, title=""):
    """Originals above, what became of each below (reconstructions, perturbed copies)."""
    n = len(top)
    fig, axes = plt.subplots(2, n, figsize=(1.3 * max(n, 2), 3.0), squeeze=False)
    for j in range(n):
        _show(axes[0][j], top[j], low, high)
        axes[0][j].set_title("original", fontsize=8)
        _show(axes[1][j], bottom[j], low, high)
        axes[1][j].set_title(bottom_titles[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    write_file(path, png(fig, dpi=110))   # never savefig(path): a link planted there is replaced, not written through
    plt.close(fig)


def adversarial_grid(path, x, x_adv, y, pred_clean, pred_adv, low, high, title="", second=("adversarial", "adv")):
    """Two rows: clean images with their predicted labels, adversarial (or triggered: `second` names the row
    and its short tag) ones with theirs."""
    n = len(x)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 3.2), squeeze=False)
    for i in range(n):
        _show(axes[0, i], x[i], low, high)
        axes[0, i].set_title(f"true {int(y[i])}\npred {int(pred_clean[i])}", fontsize=7)
        _show(axes[1, i], x_adv[i], low, high)
        ok = int(pred_adv[i]) == int(y[i])
        axes[1, i].set_title(f"{second[1]} pred {int(pred_adv[i])}", fontsize=7, color="black" if ok else "crimson")
    axes[0, 0].set_ylabel("clean", fontsize=8)
    axes[1, 0].set_ylabel(second[0], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    write_file(path, png(fig, dpi=110))   # never savefig(path): a link planted there is replaced, not written through
    plt.close(fig)


def _finish(fig, ax, path, title: str, **legend) -> None:
    ax.legend(**{"fontsize": 7, **legend})
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    write_file(path, png(fig, dpi=110))   # never savefig(path): a link planted there is replaced, not written through
    plt.close(fig)


def security_curve(path, eps, acc, lo, hi, *, norm: str, title="", marks=None):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.fill_between(eps, lo, hi, alpha=0.2, label="95% CI")
    ax.plot(eps, acc, "o-", label="robust accuracy")
    for label, (e, a) in (marks or {}).items():
        ax.plot([e], [a], "s", label=label)
    ax.set_xlabel(f"{norm} eps (fraction of input range)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _finish(fig, ax, path, title)


def roc_loglog(path, curves: dict, title=""):
    """Membership-inference ROC curves on log-log axes, where the low-FPR regime is visible."""
    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    for label, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=label, lw=1.2)
    ax.plot([1e-4, 1], [1e-4, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(1e-4, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    _finish(fig, ax, path, title, loc="lower right")


def exposure_curve(path, insertions, exposure, max_exposure, extracted, title=""):
    """Canary exposure (bits) against the number of times the canary was inserted."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.axhline(max_exposure, color="gray", ls="--", lw=0.8, label=f"log2|R| = {max_exposure:.1f} bits")
    ax.plot(insertions, exposure, "o-", label="exposure")
    ex = [(i, e) for i, e, x in zip(insertions, exposure, extracted) if x]
    if ex:
        ax.plot(*zip(*ex), "s", color="crimson", label="extracted")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("insertions of the canary in the training text")
    ax.set_ylabel("exposure (bits)")
    _finish(fig, ax, path, title)


def roc_overlay(path, curves: dict, title=""):
    """One membership-inference ROC per audit (before, after ...), log-log axes."""
    roc_loglog(path, {label: (fpr, tpr) for label, (fpr, tpr) in curves.items()}, title=title)


def curve_overlay(path, curves: dict, title="security curve, before and after", audited_eps: float | None = None):
    """Robust accuracy against eps, one line (with its 95% band) per audit; a dotted line at the audited eps."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, pts in curves.items():
        eps = [p["eps"] for p in pts]
        ax.plot(eps, [p["robust_accuracy"] for p in pts], "o-", label=label)
        ax.fill_between(eps, [p["ci"][0] for p in pts], [p["ci"][1] for p in pts], alpha=0.15)
    if audited_eps is not None:
        ax.axvline(audited_eps, color="grey", linestyle=":", label=f"audited eps {audited_eps:g}")
    ax.set_xlabel("eps (fraction of input range)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _finish(fig, ax, path, title)


def exposure_overlay(path, tables: dict, title="canary exposure, before and after"):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, rows in tables.items():
        rows = sorted(rows, key=lambda r: r["insertions"])
        ax.plot([r["insertions"] for r in rows], [r["exposure_bits"] for r in rows], "o-", label=label)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("insertions of the canary in the training text")
    ax.set_ylabel("exposure (bits)")
    ax.grid(alpha=0.3)
    _finish(fig, ax, path, title)


def tradeoff(path, param: str, xs, accuracy, risks: dict, before: dict | None = None, title=""):
    """A defence's strength against what it costs (test accuracy, left axis) and what it buys (each
    threat's headline number, right axis; dotted: its value before the defence)."""
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    ax.plot(xs, accuracy, "o-", color="black", label="test accuracy")
    if before and "accuracy" in before:
        ax.axhline(before["accuracy"], color="black", ls=":", lw=0.8)
    ax.set_xlabel(param)
    ax.set_ylabel("test accuracy")
    if min(xs) > 0 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    right = ax.twinx()
    for i, (label, values) in enumerate(risks.items()):
        color = f"C{i}"
        right.plot(xs, values, "s--", color=color, label=label)
        if before and label in before:
            right.axhline(before[label], color=color, ls=":", lw=0.8)
    right.set_ylabel("attack's headline number")
    right.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=6, loc="center right")
    ax.set_title(title or f"trade-off over {param} (dotted: before)", fontsize=9)
    fig.tight_layout()
    write_file(path, png(fig, dpi=110))   # never savefig(path): a link planted there is replaced, not written through
    plt.close(fig)


def certified_curve(path, rows: list[dict], sigma: float, n: int):
    """Randomized smoothing: certified accuracy against L2 radius, with the empirical accuracy of the smoothed
    classifier under attack at the same radii (certified must stay below it)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    r = [row["radius"] for row in rows]
    for key, style, label in (("certified", "o-", "certified"), ("empirical", "s--", "empirical (EOT-PGD)")):
        ax.plot(r, [row[key] for row in rows], style, label=label)
        ax.fill_between(r, [row[key + "_ci"][0] for row in rows], [row[key + "_ci"][1] for row in rows], alpha=0.15)
    ax.set_xlabel("L2 radius (fraction of input range)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _finish(fig, ax, path, f"randomized smoothing, sigma={sigma:g}, n={n}")


def rate_curves(path, xs, series: dict, *, xlabel: str, ylabel: str, title="", percent_x=False):
    """Rates against a budget, each series (label -> (values, ci_low, ci_high)) with its 95% interval."""
    fig, ax = plt.subplots(figsize=(5.4, 3.3))
    shown = [100 * x for x in xs] if percent_x else list(xs)
    for i, (label, (v, lo, hi)) in enumerate(series.items()):
        ax.fill_between(shown, lo, hi, alpha=0.15, color=f"C{i}")
        ax.plot(shown, v, "o-", color=f"C{i}", label=label)
    if min(shown) > 0 and max(shown) / min(shown) >= 8:
        ax.set_xscale("log")
    ax.set_xticks(shown)
    ax.set_xticklabels([f"{x:g}" for x in shown])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _finish(fig, ax, path, title)
