"""Zip archives from strangers are size-checked before anything reads a member (zip bombs), and their
member names are checked for paths that would leave the archive. Torch (`torch.save`, TorchScript,
`torch.export`), skops and `.npz` files are all zip archives."""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int = 8 << 30        # everything unpacked together
    max_members: int = 100_000
    max_ratio: float = 200.0              # unpacked / packed, for members above ratio_floor
    ratio_floor: int = 16 << 20

    @classmethod
    def from_env(cls) -> "ArchiveLimits":
        """$MLWARDEN_MAX_UNPACKED_MB raises the total for a user with really large models."""
        mb = os.environ.get("MLWARDEN_MAX_UNPACKED_MB")
        return cls(max_total_bytes=int(float(mb) * (1 << 20))) if mb else cls()


def archive_problems(zf: zipfile.ZipFile, limits: ArchiveLimits | None = None) -> list[str]:
    """What makes this archive unsafe to open, from its central directory alone (no member is read)."""
    limits = limits or ArchiveLimits.from_env()
    infos = zf.infolist()
    problems = []
    if len(infos) > limits.max_members:
        problems.append(f"{len(infos)} members (limit {limits.max_members})")
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_bytes:
        problems.append(f"unpacks to {total / (1 << 20):.0f} MiB (limit {limits.max_total_bytes / (1 << 20):.0f} "
                        "MiB; set MLWARDEN_MAX_UNPACKED_MB for a larger trusted model)")
    for i in infos:
        ratio = i.file_size / max(i.compress_size, 1)
        if i.file_size > limits.ratio_floor and ratio > limits.max_ratio:
            problems.append(f"member {i.filename!r} expands {ratio:.0f}x to {i.file_size / (1 << 20):.0f} MiB "
                            "(a zip bomb)")
            break
    seen: set[str] = set()
    for i in infos:   # readers disagree on which copy of a repeated name they read (and on its case)
        key = i.filename.lower()
        if key in seen:
            problems.append(f"member name {i.filename!r} occurs twice (readers would disagree on which to load)")
            break
        seen.add(key)
    for i in infos:
        parts = Path(i.filename.replace("\\", "/")).parts
        if i.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            problems.append(f"member path {i.filename!r} leaves the archive")
            break
    return problems


def open_zip(path: Path) -> zipfile.ZipFile | None:
    """The archive, or None when the file is not a zip archive."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def read_member(zf: zipfile.ZipFile, name: str, limit: int = 1 << 30) -> bytes:
    """Read one member, never more than `limit` bytes whatever its header claims."""
    with zf.open(name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"member {name!r} is larger than {limit >> 20} MiB")
    return data
