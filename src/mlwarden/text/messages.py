"""Labelled text messages (mail, SMS) as a data set, for the spam-poisoning threats and their defences.

A message travels through the rest of mlwarden as a row of UTF-8 bytes (a uint8 tensor, zero-padded to
the longest message), so data splits, accuracy helpers and harden's before/after handle messages like
any other input; `decode` turns rows back into text for the filters. Labels: 0 ham, 1 spam. This is a
different modality from the character-model corpus (text/corpus.py) that the Secret Sharer uses."""
from __future__ import annotations

import numpy as np
import torch

from ..core.data import Dataset, InputSpace
from ..core.errors import UserError

MODALITY = "messages"
MAX_MESSAGE_BYTES = 65_536     # longer messages are cut here (a row per message, padded to the longest)
MAX_PADDED_BYTES = 2 * 2**30   # all messages, each padded to the longest: beyond this, a one-line error
LABELS = {"ham": 0, "spam": 1, "0": 0, "1": 1}


def encode(texts: list[str]) -> torch.Tensor:
    """Messages as rows of UTF-8 bytes, zero-padded; a message is cut at MAX_MESSAGE_BYTES (at a character
    boundary) and NUL characters are dropped (they mark the padding)."""
    raw = [t.replace("\x00", "").encode("utf-8")[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore").encode("utf-8")
           for t in texts]
    width = max((len(b) for b in raw), default=1) or 1
    if len(raw) * width > MAX_PADDED_BYTES:
        raise UserError(f"{len(raw)} messages padded to the longest ({width} bytes) would take "
                        f"{len(raw) * width / 2**30:.1f} GiB (limit {MAX_PADDED_BYTES / 2**30:g} GiB): shorten the "
                        "longest messages or audit fewer")
    out = np.zeros((len(raw), width), dtype=np.uint8)
    for i, b in enumerate(raw):
        out[i, :len(b)] = np.frombuffer(b, dtype=np.uint8)
    return torch.from_numpy(out)


def decode(x: torch.Tensor) -> list[str]:
    """Rows of bytes back to text (bytes that are not UTF-8 are replaced, never an error)."""
    a = x.detach().cpu().to(torch.uint8).numpy()
    return [bytes(row[:_length(row)]).decode("utf-8", "replace") for row in a]


def _length(row: np.ndarray) -> int:
    nz = np.flatnonzero(row)
    return int(nz[-1]) + 1 if len(nz) else 0


def concat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two batches of encoded messages as one (the narrower one padded)."""
    width = max(a.shape[1], b.shape[1])
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731
    return torch.cat([pad(a), pad(b)])


class MessageSpace(InputSpace):
    """The input space of encoded messages: bytes, not a range that a perturbation budget divides."""

    def describe(self) -> str:
        return ("each message as its UTF-8 bytes, zero-padded to the longest; threats change training mail, so no "
                "perturbation budget applies")


def parse_label(raw: str, where: str) -> int:
    label = LABELS.get(raw.strip().lower())
    if label is None:
        raise UserError(f"{where}: label '{raw.strip()[:40]}' is neither ham nor spam (nor 0 or 1); a spam filter's "
                        "messages are labelled ham or spam")
    return label


def messages_dataset(name: str, texts: list[str], labels: list[int], test_fraction: float, seed: int,
                     split=None) -> Dataset:
    """A stratified, seeded train/test split of labelled messages. `split(x, y, test_fraction, seed)` is the
    splitter (io.datasets passes its own, so every data set splits the same way)."""
    if len(texts) == 0:
        raise UserError(f"{name}: no messages")
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 2:
        raise UserError(f"{name}: {counts[0]} ham and {counts[1]} spam messages; a spam filter needs at least two "
                        "of each")
    empty = sum(1 for t in texts if not t.strip())
    if empty == len(texts):
        raise UserError(f"{name}: every message is empty")
    idx = np.arange(len(texts))
    tr, te, ytr, yte = split(idx, y, test_fraction, seed)
    x = encode(texts)
    ds = Dataset(name, x[torch.as_tensor(tr)], torch.as_tensor(ytr), x[torch.as_tensor(te)], torch.as_tensor(yte),
                 2, MessageSpace(0.0, 255.0, True), MODALITY)
    return ds
