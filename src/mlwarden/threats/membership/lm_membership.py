"""Membership inference against a next-token language model, at the level of sequences.

The signal of a sequence is its mean per-token log-likelihood under the model (each token predicted from
the model's context window, the sequence's first tokens from a padded start, as in training): the
sequence's geometric-mean probability p, which ML Privacy Meter also uses for language models. It
becomes the two-class signal [log p, log(1 - p)], so LOSS, LiRA and RMIA run on it unchanged, calibrated
by reference models that the subject's recipe trains on random halves of the pool of sequences
(Carlini et al. 2022 and Zarifzadeh et al. 2024, applied to sequences; Mattern et al. 2023 and Duan et
al. 2024 discuss why uncalibrated LOSS is weak on language models).

Sequences are the corpus's paragraphs (split at blank lines). Members: the paragraphs of the text the
audited model trained on; non-members: those of its held-out text. The pool also holds the Secret
Sharer's canaries (Carlini et al. 2019), each IN for half of the reference models: how well membership
of a planted secret shows is reported on its own."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import Field

from ...core.finding import Check
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context
from ...privacy.signals import log_probs
from ..memorization.canaries import NAMES, make_canaries
from .common import Pool


@dataclass
class TextPool(Pool):
    seqs: list[str] = field(default_factory=list)   # the sequences, in pool order
from .membership_inference import PRIMARY, MembershipInference, PoolParams, SignalParams, _has_network

ATTACKS = ["loss", "lira-online", "lira-offline", "rmia-online", "rmia-offline"]


class Lmp(SignalParams, PoolParams):
    attacks: list[str] = Field(default_factory=lambda: list(ATTACKS))
    canaries: int = Field(16, ge=0, le=len(NAMES), description="secret-bearing sequences added to the pool")
    canary_insertions: int = Field(1, ge=1, le=64, description="how often a reference model that has a canary "
                                   "sees it")
    digits: int = Field(6, ge=2, le=12, description="length of a canary's secret")
    min_length: int = Field(20, ge=1, description="shorter paragraphs are left out of the pool")
    temperature: float = Field(1.0, gt=0, le=100, description="softmax temperature of the token probabilities (1 "
                               "measured best on the character LM: docs/threats.md)")


def paragraphs(text: str, min_length: int) -> list[str]:
    return [s for s in (s.strip("\n") for s in text.split("\n\n")) if len(s) >= min_length]


def sequence_windows(corpus, seqs: list[str]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Every token of every sequence with the `context` tokens before it (newline-padded at the start):
    (windows, next tokens, the sequence each window belongs to)."""
    pad = "\n" * corpus.context
    xs, ys, ids = [], [], []
    for i, s in enumerate(seqs):
        t = corpus.encode(pad + s)
        xs.append(t.unfold(0, corpus.context, 1)[:-1])
        ys.append(t[corpus.context:])
        ids.append(np.full(len(s), i))
    return torch.cat(xs).float(), torch.cat(ys), np.concatenate(ids)


def sequence_signal(model, x: torch.Tensor, y: torch.Tensor, seq: np.ndarray, n: int, temperature: float,
                    logits: bool) -> np.ndarray:
    """(1, N, 2) log-probabilities [log p, log(1 - p)], p the geometric-mean token probability of each
    sequence."""
    lp = log_probs(model, x, temperature=temperature, logits=logits)
    tok = lp[np.arange(len(y)), y.numpy()]
    mean = np.bincount(seq, weights=tok, minlength=n) / np.maximum(np.bincount(seq, minlength=n), 1)
    mean = np.minimum(mean, -1e-12)
    return np.stack([mean, np.log(-np.expm1(mean))], axis=-1)[None]


@register
class LanguageModelMembership(MembershipInference):
    """Sequence-level membership inference against a language model, calibrated by reference models."""
    checks_split = False   # its pool or its signal is not the class log-probabilities on the data's split
    name = "lm-membership"
    title = "Membership inference on text sequences (was this paragraph in the training text?)"
    needs = Access.SCORES
    modalities = ("text",)
    atlas = ["AML.T0024.000"]
    Params = Lmp
    profiles = {"quick": {"n_reference": 8}, "standard": {"n_reference": 16}, "thorough": {"n_reference": 32}}
    ATTACKS, PRIMARY, SHOWN = ATTACKS, PRIMARY, ("loss", "lira-online", "rmia-online")

    def skip_reason(self, ctx: Context) -> str | None:
        if getattr(ctx.data, "corpus", None) is None:
            return "applies to text corpora (next-token language models)"
        return super().skip_reason(ctx)

    def pool(self, ctx: Context, p: Lmp) -> Pool:
        corpus = ctx.data.corpus
        members, others = paragraphs(corpus.train, p.min_length), paragraphs(corpus.test, p.min_length)
        planted = [c.text for c in make_canaries([p.canary_insertions] * p.canaries, p.digits, ctx.seed + 1)]
        seqs = members + others + planted
        target_in = np.r_[np.ones(len(members), bool), np.zeros(len(others) + len(planted), bool)]
        is_canary = np.r_[np.zeros(len(members) + len(others), bool), np.ones(len(planted), bool)]
        reps = np.where(is_canary, p.canary_insertions, 1)

        def subset(idx):
            return corpus.windows("\n\n".join(seqs[i] for i in idx for _ in range(reps[i])))
        digest = hashlib.sha256("\x00".join([*seqs, str(p.canary_insertions), str(corpus.context)]).encode())
        ids = torch.arange(len(seqs))
        return TextPool(ids, torch.zeros(len(seqs), dtype=torch.int64), target_in, len(corpus.vocab), subset,
                        (corpus.context,), {"canaries": is_canary} if planted else {}, digest.hexdigest()[:32], seqs)

    def signal_fn(self, ctx: Context, p: Lmp, pool: TextPool, notes: list[str]):
        corpus = ctx.data.corpus
        seqs = pool.seqs
        wx, wy, seq = sequence_windows(corpus, seqs)
        from_logits = p.logits and _has_network(ctx.target)
        n_members = int(pool.target_in.sum())
        notes.append(f"Sequences: {len(seqs)} paragraphs of at least {p.min_length} characters ({n_members} from the "
                     f"training text: the audited model's members; {len(seqs) - n_members - p.canaries} held out; "
                     f"{p.canaries} canaries 'the pin of NAME is {'D' * p.digits}', never in the audited model's "
                     f"data, each in half of the reference models' text, {p.canary_insertions}x)")
        notes.append(f"Signal: a sequence's mean per-character log-likelihood at temperature {p.temperature:g}, "
                     + ("from the logits" if from_logits else "from the probabilities the target returns")
                     + f"; {len(wx)} next-character queries per model")

        def signal(model, y):
            return sequence_signal(model, wx, wy, seq, len(seqs), p.temperature, from_logits), np.zeros(len(seqs), int)
        return signal

    @staticmethod
    def match_check(logp, y, target_in, in_mask) -> Check:
        """The reference models must fit their training text as the audited model fits its own, or the
        calibration is off: mean loss per character on training sequences (the reference models on the
        training-text sequences they trained on). Held-out loss cannot be compared: the audited model's
        held-out text is the corpus's tail, which reference models trained on random halves of the pool
        partly saw. The check also says how much harder the tail is than the head for models that trained
        on neither: then the audited model's own numbers measure that shift as well as membership, and the
        pooled numbers (random halves) are the measurement."""
        nats = -logp[:, :, 0]
        ref_in, ref_out = in_mask[1:], ~in_mask[1:]
        target = nats[0, target_in].mean()
        refs = nats[1:][ref_in & target_in].mean()
        shift = nats[1:][ref_out & ~target_in].mean() - nats[1:][ref_out & target_in].mean()
        return Check("reference-models-match-target", bool(abs(refs - target) > 0.5),
                     f"loss on training sequences: target {target:.2f} nats per character, reference models {refs:.2f}; "
                     "a gap over 0.5 means the recipe does not reproduce the target. Held-out text is "
                     f"{shift:+.2f} nats per character harder than the training text for models that trained on "
                     "neither" + ("; the audited model's own numbers measure that shift too" if shift > 0.1 else ""),
                     "Give the recipe that trained this model (--recipe, with its epochs and learning rate), so "
                     "that the reference models reach its loss; the attack is calibrated on them.")
