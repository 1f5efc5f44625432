"""What the spam-poisoning threats share (Nelson et al. 2008, "Exploiting Machine Learning to Subvert Your
Spam Filter"): the victim's error rates with their intervals, attack messages, retraining the victim on
poisoned mail through its recipe (and through a sanitizer, counting what it removed), and how the victim
failed."""
from __future__ import annotations

from dataclasses import replace

import torch

from ...core.finding import Metric, Remedy
from ...core.threat import Context
from ...text.filters import FilterRecipe
from ...text.messages import MODALITY, concat, decode, encode
from ...text.spambayes import HAM, SPAM
from .poisoning import sanitized_fit

FAMILY = "model-corruption"
ATLAS = ["AML.T0020"]   # Poison Training Data
REMEDY = Remedy("roni", "Reject on negative impact (Nelson et al. 2008): a message joins the training mail only if "
                "adding it does not hurt the filter on a trusted calibration set. It stops dictionary attacks, not "
                "focused ones; also keep training mail the user did not label out of the training set.",
                "mlwarden harden --defense roni")
HAM_FLAGGED = "test ham marked spam or unsure"
HAM_SPAM = "test ham marked spam"
SPAM_PASSED = "test spam let through (marked ham)"


def skip_reason(ctx: Context) -> str | None:
    if ctx.data.modality != MODALITY:
        return f"poisons a spam filter's training mail; this data is {ctx.data.modality}, not labelled messages"
    if not isinstance(ctx.recipe, FilterRecipe):
        return "needs training access: the filter's recipe (the built-in filter, or a scikit-learn text pipeline)"
    return None


def error_rates(flt, x: torch.Tensor, y: torch.Tensor) -> dict[str, Metric]:
    """The filter's errors on test mail: ham it flags (spam or unsure), ham it marks spam, spam it lets in."""
    v = flt.verdicts(decode(x))
    ham = y.numpy() == 0
    return {HAM_FLAGGED: Metric.rate(HAM_FLAGGED, int((v[ham] != HAM).sum()), int(ham.sum())),
            HAM_SPAM: Metric.rate(HAM_SPAM, int((v[ham] == SPAM).sum()), int(ham.sum())),
            SPAM_PASSED: Metric.rate(SPAM_PASSED, int((v[~ham] == HAM).sum()), int((~ham).sum()))}


def attack_messages(words: list[str], copies: int, per_message: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`copies` spam-labelled messages (the attacker's mail, labelled spam by the victim's users, as Nelson et
    al. assume), each holding all of `words` (per_message 0), or the words cut into chunks of `per_message`,
    message i holding chunk i (cycling): smaller messages, each with less impact, to slip past a sanitizer."""
    if not per_message or per_message >= len(words):
        texts = [" ".join(words)] * copies
    else:
        chunks = [words[i:i + per_message] for i in range(0, len(words), per_message)]
        texts = [" ".join(chunks[i % len(chunks)]) for i in range(copies)]
    return encode(texts), torch.ones(copies, dtype=torch.int64)


def copies_for(control: float, n_train: int) -> int:
    """Attack messages for a share of attacker control: a fraction of the clean training set, at least one."""
    return max(1, round(control * n_train))


def fit_poisoned(recipe: FilterRecipe, data, x_poison: torch.Tensor, y_poison: torch.Tensor, seed: int):
    """The victim retrained on its clean training mail plus the attack messages, and through a sanitizer what
    it removed: (filter, removal metrics)."""
    x, y = concat(data.x_train, x_poison), torch.cat([data.y_train, y_poison])
    planted = torch.cat([torch.zeros(len(data.x_train), dtype=torch.bool),
                         torch.ones(len(x_poison), dtype=torch.bool)])
    flt, metrics = sanitized_fit(recipe, x, y, planted, 2, seed)
    return flt, [_renamed(m) for m in metrics]


def _renamed(m: Metric) -> Metric:
    """Spam wording: planted points are attack messages, clean points legitimate training messages."""
    name = m.name.replace("planted points", "attack messages").replace("clean points",
                                                                        "legitimate training messages")
    return replace(m, name=name)


def worst_rate(clean: dict[str, Metric], poisoned: dict[str, Metric]) -> str:
    """The error rate (ham flagged, or spam let through) the attack raised most."""
    return max((HAM_FLAGGED, SPAM_PASSED), key=lambda k: poisoned[k].value - clean[k].value)


def failure_mode(clean: dict[str, Metric], poisoned: dict[str, Metric]) -> tuple[str, float]:
    """Which way the poisoned victim failed, and the lower 95% bound of the rise of that error rate (the
    clean rate's upper bound subtracted: a rise the intervals cannot explain)."""
    rise = {k: poisoned[k].ci_low - clean[k].ci_high for k in (HAM_FLAGGED, SPAM_PASSED)}
    worst = max(rise, key=rise.get)
    if rise[worst] <= 0:
        return "no error rate rose beyond its clean interval", max(rise[worst], 0.0)
    if worst == HAM_FLAGGED:
        return ("it flags legitimate mail: ham lands in spam or unsure, so users must search those folders and "
                "the filter is useless (an availability attack)", rise[worst])
    return ("it lets spam through: the attack mail dilutes what the filter learned of spam (each real spam word "
            "is a smaller share of all the words it saw in spam), so real spam no longer stands out and reaches "
            "the inbox", rise[worst])


def dictionary_words(tokens) -> list[str]:
    return sorted(t for t in tokens if not t.startswith("skip:"))

