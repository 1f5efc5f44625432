"""A text corpus that ships with Python itself: the docstrings of a fixed list of standard-library
modules (and of their public classes and functions), so the text demo runs offline. The text depends on
the interpreter's version (the tests pin Python 3.11); only printable ASCII is kept.

Text becomes a classification data set of windows: x = `context` character ids, y = the next id."""
from __future__ import annotations

import functools
import importlib
import inspect
import re
from dataclasses import dataclass

import torch

from ..core.data import Dataset, InputSpace
from ..core.errors import UserError

STDLIB_MODULES = ("json", "csv", "argparse", "collections", "functools", "itertools", "pathlib", "shutil",
                  "string", "textwrap", "logging", "datetime", "random", "statistics", "fractions", "heapq",
                  "bisect", "queue", "tempfile", "zipfile", "tarfile", "gzip", "base64", "hashlib", "secrets",
                  "uuid", "difflib", "pprint", "inspect", "contextlib", "dataclasses", "enum", "typing", "copy",
                  "operator", "decimal", "calendar", "configparser", "fnmatch", "glob", "ipaddress", "locale",
                  "mimetypes", "pickle", "shlex", "socket", "sqlite3", "subprocess", "threading", "timeit")
ALPHABET = "".join(chr(c) for c in range(32, 127)) + "\n"
DEFAULT_CONTEXT = 20


def stdlib_docstrings(max_chars: int | None = None) -> str:
    parts: list[str] = []
    for name in STDLIB_MODULES:
        mod = importlib.import_module(name)
        docs = [inspect.getdoc(mod)]
        for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", "") == name:
                docs.append(inspect.getdoc(obj))
        for d in docs:
            if d:
                d = re.sub(r"[ \t]+", " ", d)
                parts.append("".join(c for c in d if c in ALPHABET).strip())
    text = "\n\n".join(p for p in parts if len(p) > 40)
    return text[:max_chars] if max_chars else text


@dataclass
class TextCorpus:
    train: str
    test: str
    vocab: str  # index -> character
    context: int = DEFAULT_CONTEXT

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.vocab)}

    def encode(self, text: str) -> torch.Tensor:
        try:
            return torch.tensor([self._index[c] for c in text], dtype=torch.int64)
        except KeyError as e:
            raise UserError(f"character {e.args[0]!r} is not in the corpus vocabulary") from None

    def context_ids(self, text: str) -> torch.Tensor:
        """The last `context` characters of text, left-padded with newlines (what precedes a paragraph)."""
        return self.encode(("\n" * self.context + text)[-self.context:])

    def windows(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.encode(text)
        if len(ids) <= self.context:
            raise UserError(f"text of {len(ids)} characters is shorter than the context of {self.context}")
        x = ids.unfold(0, self.context, 1)[:-1]
        return x.to(torch.float32), ids[self.context:]

    def dataset(self, name: str, train_text: str | None = None) -> Dataset:
        xtr, ytr = self.windows(self.train if train_text is None else train_text)
        xte, yte = self.windows(self.test)
        ds = Dataset(name, xtr, ytr, xte, yte, len(self.vocab), InputSpace(0, len(self.vocab) - 1, True), "text")
        ds.corpus = self
        return ds


def make_corpus(text: str, test_fraction: float = 0.1, context: int = DEFAULT_CONTEXT) -> TextCorpus:
    text = "".join(c for c in text if c in ALPHABET)
    if len(text) < 20 * context:
        raise UserError(f"the corpus has {len(text)} usable characters; at least {20 * context} are needed")
    cut = int(len(text) * (1 - test_fraction))
    return TextCorpus(text[:cut], text[cut:], ALPHABET, context)


def load_text(path_or_name: str, max_chars: int | None = None) -> Dataset:
    if path_or_name == "stdlib-docstrings":
        return make_corpus(stdlib_docstrings(max_chars)).dataset("stdlib-docstrings")
    from pathlib import Path
    p = Path(path_or_name)
    if not p.exists():
        raise UserError(f"text corpus not found: {path_or_name}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path_or_name}: not UTF-8 text") from None
    return make_corpus(text[:max_chars] if max_chars else text).dataset(p.stem)
