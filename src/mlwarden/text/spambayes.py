"""A SpamBayes-style spam filter: the victim of Nelson et al. 2008, "Exploiting Machine Learning to Subvert
Your Spam Filter" (LEET '08), built in so the spam-poisoning audit needs nothing from the user.

As SpamBayes does (Robinson 2003, "A statistical approach to the spam problem"; Meyer & Whateley 2004,
"SpamBayes: Effective open-source, Bayesian based, email classification system"):
- a message is the set of its tokens (words of 3-12 characters, lower-cased; a longer word becomes a
  "skip" token of its first character and length, rounded down to tens);
- a token's spam probability comes from the share of spam and of ham messages that contain it
  (document frequency), smoothed towards 0.5 by Robinson's rule: (s x + n p) / (s + n), s = 0.45, x = 0.5;
- the at most 150 tokens whose probability is at least 0.1 away from 0.5 are combined by Fisher's
  chi-square method into a score in [0, 1]: under 0.2 is ham, 0.9 and over is spam, in between unsure.

One deviation: leading and trailing punctuation is stripped from words ("free!" is "free"), which suits
short messages (SpamBayes splits on white space only and keeps it)."""
from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

HAM, UNSURE, SPAM = 0, 1, 2
VERDICTS = ("ham", "unsure", "spam")
_PUNCT = "\"'`.,;:!?()[]{}<>*_-+=~|/\\#&^%@"


@functools.lru_cache(maxsize=200_000)
def tokenize(text: str) -> frozenset[str]:
    """The set of tokens of a message (see the module docstring)."""
    out = set()
    for word in text.lower().split():
        word = word.strip(_PUNCT)
        n = len(word)
        if 3 <= n <= 12:
            out.add(word)
        elif n > 12:
            out.add(f"skip:{word[0]} {n // 10 * 10}")
    return frozenset(out)


def words(text: str) -> list[str]:
    """The tokens of a text that a message can carry as words (skip tokens left out), in order, once each:
    what a dictionary attack stuffs into its messages."""
    seen: dict[str, None] = {}
    for word in re.split(r"\s+", text.lower()):
        word = word.strip(_PUNCT)
        if 3 <= len(word) <= 12 and word not in seen and not any(c.isspace() for c in word):
            seen[word] = None
    return list(seen)


@dataclass
class SpamBayes:
    """The filter. `fit(texts, labels)` with labels 0 = ham, 1 = spam; `spam_scores` in [0, 1]; `verdicts`
    0 ham, 1 unsure, 2 spam."""
    unknown_word_strength: float = 0.45
    unknown_word_prob: float = 0.5
    minimum_prob_strength: float = 0.1
    max_discriminators: int = 150
    ham_cutoff: float = 0.20
    spam_cutoff: float = 0.90

    name = "SpamBayes-style filter"

    def fit(self, texts, labels) -> "SpamBayes":
        labels = np.asarray(labels)
        ham, spam = Counter(), Counter()
        for text, y in zip(texts, labels):
            (spam if y == 1 else ham).update(tokenize(text))
        self.n_ham, self.n_spam = int((labels != 1).sum()), int((labels == 1).sum())
        vocab = list(ham.keys() | spam.keys())
        h = np.array([ham[t] for t in vocab], dtype=np.float64)
        s = np.array([spam[t] for t in vocab], dtype=np.float64)
        hr, sr = h / max(self.n_ham, 1), s / max(self.n_spam, 1)
        p = np.divide(sr, hr + sr, out=np.full_like(sr, 0.5), where=(hr + sr) > 0)
        n = h + s
        p = (self.unknown_word_strength * self.unknown_word_prob + n * p) / (self.unknown_word_strength + n)
        self.prob = dict(zip(vocab, p.tolist()))
        return self

    def spam_scores(self, texts) -> np.ndarray:
        """Chi-square combined spam probability of each message (0.5 when no token is a clue)."""
        s_sum, h_sum, k = [], [], []
        for text in texts:
            p = np.array([self.prob.get(t, self.unknown_word_prob) for t in tokenize(text)], dtype=np.float64)
            strength = np.abs(p - 0.5)
            p = p[strength >= self.minimum_prob_strength]
            if len(p) > self.max_discriminators:
                p = p[np.argsort(-np.abs(p - 0.5), kind="stable")[:self.max_discriminators]]
            s_sum.append(np.log1p(-p).sum())      # spam evidence: ln prod(1 - p)
            h_sum.append(np.log(p).sum())         # ham evidence: ln prod(p)
            k.append(len(p))
        k = np.asarray(k)
        dof = np.maximum(2 * k, 1)
        s = 1.0 - chi2.sf(-2.0 * np.asarray(s_sum), dof)
        h = 1.0 - chi2.sf(-2.0 * np.asarray(h_sum), dof)
        return np.where(k > 0, (s - h + 1.0) / 2.0, 0.5)

    def verdicts(self, texts) -> np.ndarray:
        score = self.spam_scores(texts)
        return np.where(score < self.ham_cutoff, HAM, np.where(score >= self.spam_cutoff, SPAM, UNSURE))
