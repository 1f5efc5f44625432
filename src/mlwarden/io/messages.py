"""Reading labelled messages: a TSV of `label<TAB>text` lines (as the SMS Spam Collection ships), a CSV
with a text column, or the SMS Spam Collection itself (`--data sms-spam`), fetched into the cache once
with its checksum verified, or placed there by hand on a machine without the internet."""
from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from ..core.cache import cache_dir
from ..core.data import Dataset, is_number
from ..core.errors import UserError
from ..text.messages import messages_dataset, parse_label

SMS_SPAM = "sms-spam"
SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_SPAM_MD5 = "1949b64a224790d01335c2bf8a0e48b2"
SMS_SPAM_FILE = "SMSSpamCollection"
MAX_DOWNLOAD = 10 * 2**20


def sms_spam_path() -> Path:
    return cache_dir() / "data" / SMS_SPAM / SMS_SPAM_FILE


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def fetch_sms_spam() -> Path:
    """The SMS Spam Collection (Almeida et al. 2011, UCI, CC BY 4.0) in the cache: checked if present, else
    downloaded and checked. Without the internet, the error says where to place the file by hand."""
    path = sms_spam_path()
    if path.is_file():
        if _md5(path.read_bytes()) == SMS_SPAM_MD5:
            return path
        raise UserError(f"{path}: checksum mismatch (md5 should be {SMS_SPAM_MD5}); delete the file and run again")
    how = (f"place the file {SMS_SPAM_FILE} (md5 {SMS_SPAM_MD5}, from {SMS_SPAM_URL}) at {path} by hand, or give "
           "any labelled TSV or CSV with --data")
    try:
        with urllib.request.urlopen(SMS_SPAM_URL, timeout=20) as r:
            blob = r.read(MAX_DOWNLOAD + 1)
    except OSError as e:
        raise UserError(f"sms-spam: cannot download the SMS Spam Collection ({getattr(e, 'reason', e)}); {how}") from None
    try:
        with zipfile.ZipFile(io.BytesIO(blob[:MAX_DOWNLOAD])) as zf:
            data = zf.read(SMS_SPAM_FILE)
    except (zipfile.BadZipFile, KeyError) as e:
        raise UserError(f"sms-spam: the download is not the expected archive ({e}); {how}") from None
    if _md5(data) != SMS_SPAM_MD5:
        raise UserError(f"sms-spam: the downloaded file has md5 {_md5(data)}, not {SMS_SPAM_MD5}; {how}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for ln, line in enumerate(_read(path).split("\n"), start=1):   # not splitlines(): \f, \v, U+2028 are text
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        label, sep, text = line.partition("\t")
        if not sep:
            raise UserError(f"{path}: line {ln} has no tab; each line must be label<TAB>text")
        labels.append(parse_label(label, f"{path}: line {ln}"))
        texts.append(text)
    return texts, labels


def read_csv_messages(path: Path, label_column: str, text_column: str) -> tuple[list[str], list[int]]:
    rows = list(csv.reader(io.StringIO(_read(path), newline="")))
    header = [h.strip() for h in rows[0]] if rows else []
    for col in (label_column, text_column):
        if col not in header:
            raise UserError(f"{path}: no column '{col}' (columns: {', '.join(header[:10])})")
    li, ti = header.index(label_column), header.index(text_column)
    texts, labels = [], []
    for ln, r in enumerate(rows[1:], start=2):
        if not r:
            continue
        if len(r) != len(header):
            raise UserError(f"{path}: line {ln} has {len(r)} fields, the header has {len(header)}")
        labels.append(parse_label(r[li], f"{path}: line {ln}"))
        texts.append(r[ti])
    if texts and all(is_number(t) for t in texts):
        raise UserError(f"{path}: column '{text_column}' holds only numbers, not messages; for numeric features "
                        f"name the text column something else ([data] text_column picks the column of messages)")
    return texts, labels


def is_message_csv(path: Path, text_column: str) -> bool:
    """A CSV whose header names the text column holds messages, not numeric features."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return False
    return text_column in [h.strip() for h in header]


def is_messages(spec: str, text_column: str = "text") -> bool:
    """Whether a --data value names labelled messages (sms-spam, a .tsv, a CSV with a text column)."""
    p = Path(spec)
    return spec == SMS_SPAM or p.suffix.lower() == ".tsv" or (
        p.suffix.lower() == ".csv" and p.is_file() and is_message_csv(p, text_column))


def load_messages(spec: str, *, label_column: str, text_column: str, test_fraction: float, seed: int,
                  split) -> Dataset:
    if spec == SMS_SPAM:
        path, name = fetch_sms_spam(), SMS_SPAM
    else:
        path, name = Path(spec), Path(spec).name
    if path.suffix.lower() == ".csv":
        texts, labels = read_csv_messages(path, label_column, text_column)
    else:
        texts, labels = read_tsv(path)
    return messages_dataset(name, texts, labels, test_fraction, seed, split)
