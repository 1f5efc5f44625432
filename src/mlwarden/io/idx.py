"""Reader for the IDX format of the MNIST files (LeCun et al.): big-endian header, then uint8 data."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..core.errors import UserError


def read_idx(path: str | Path) -> np.ndarray:
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"{p}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{p}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{p}: header says {dims} but holds {data.size} values")
    return data.reshape(dims)
