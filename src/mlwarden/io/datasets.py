"""Data sets: the built-in ones that ship with scikit-learn, and the user's .npz, .csv and Parquet files (image
folders: io/images.py)."""
from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
from sklearn import datasets as skd
from sklearn.model_selection import train_test_split

from ..core.data import MAX_CLASSES, Dataset, is_number, make_dataset
from ..core.errors import UserError
from ..core.files import refuse_special
from .messages import SMS_SPAM, is_message_csv, load_messages
from .scan.archives import archive_problems

BUILTIN = {
    # name: (loader, modality, image shape or None, divisor that maps the raw values to [0, 1])
    "digits": (skd.load_digits, "image", (1, 8, 8), 16.0),
    "breast-cancer": (skd.load_breast_cancer, "tabular", None, None),
    "iris": (skd.load_iris, "tabular", None, None),
    "wine": (skd.load_wine, "tabular", None, None),
}


TEXT_DEMO_CHARS = 100_000  # the built-in text corpus is cut here so a character LM trains in seconds


def split_note(test_fraction: float, seed: int) -> str:
    return (f"split by mlwarden: {test_fraction:.0%} test, seed {seed}, stratified by class; membership numbers "
            "assume the train part is what the model was trained on (give the true split with --test-data)")


def _split(x, y, test_fraction: float, seed: int):
    """A seeded train/test split, stratified when every class has two rows; odd labels are left for
    make_dataset to name."""
    if len(y) < 4:
        raise UserError(f"the data has {len(y)} rows: at least 4 are needed to split it into members (train) and "
                        "non-members (test)")
    labels = np.asarray(y)
    plain = labels.ndim == 1 and np.all(np.isfinite(labels)) and labels.min() >= 0 and labels.max() < MAX_CLASSES
    stratify = y if plain and np.bincount(labels.astype(int)).min() >= 2 else None
    try:
        return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=stratify)
    except ValueError as e:   # e.g. a test split too small to hold every class
        raise UserError(f"cannot split {len(y)} rows into train and test at test_fraction {test_fraction:g}: "
                        f"{' '.join(str(e).split())[:200]} (give more rows or a larger test_fraction)") from None


def load_builtin(name: str, test_fraction: float = 0.25, seed: int = 0, *, raw: bool = False, input_range=None,
                 input_shape=None) -> Dataset:
    """A data set that ships with scikit-learn. Digits are scaled to [0, 1] (or to a declared input range);
    tabular features are min-max scaled to [0, 1] so that eps means the same on every feature, or with
    `raw` kept in the units scikit-learn ships them in (what a model served elsewhere was trained on). A
    declared input shape reshapes each sample (digits as 64 features for a model that takes them flat)."""
    loader, modality, shape, div = BUILTIN[name]
    b = loader()
    x, y = b.data.astype(np.float32), b.target.astype(np.int64)
    label = name
    if div is not None:
        lo, hi = (0.0, 1.0) if input_range is None else (float(input_range[0]), float(input_range[1]))
        if not hi > lo:
            raise UserError(f"{name}: input range [{lo:g}, {hi:g}] is empty")
        x = lo + x / div * (hi - lo)
        rng = (lo, hi)
        if (lo, hi) != (0.0, 1.0):
            label = f"{name} (pixels scaled to [{lo:g}, {hi:g}])"
    elif raw:
        rng = input_range
        label = f"{name} (raw feature values, as scikit-learn ships them)"
    else:
        x = (x - x.min(0)) / np.maximum(x.max(0) - x.min(0), 1e-12)
        rng = (0.0, 1.0) if input_range is None else tuple(input_range)
        if rng != (0.0, 1.0):
            raise UserError(f"{name}: features are scaled to [0, 1]; a declared range applies to its raw values "
                            "(audit an endpoint, which gets raw values) or to your own data file")
    if shape is not None:
        x = x.reshape(-1, *shape)
    if input_shape is not None:
        x = _reshape(Path(name), x, input_shape)
    xtr, xte, ytr, yte = _split(x, y, test_fraction, seed)
    ds = make_dataset(label, xtr, ytr, xte, yte, input_range=rng, modality=modality)
    ds.split = split_note(test_fraction, seed)
    return ds


def load_npz(path: Path, test_fraction: float, seed: int, input_range=None, input_shape=None) -> Dataset:
    if zipfile.is_zipfile(path):   # sized from the central directory before any array is unpacked
        with zipfile.ZipFile(path) as zf:
            problems = archive_problems(zf)
        if problems:
            raise UserError(f"{path}: refusing to unpack: {problems[0]}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise UserError(f"{path}: not a readable .npz file ({e})") from None
    split = "given (x_train, x_test)"
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        xtr, ytr, xte, yte = (arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    elif {"x", "y"} <= arrays.keys():
        x, y = arrays["x"], arrays["y"]
        if x.ndim == 0 or y.ndim == 0:
            raise UserError(f"{path}: x has shape {x.shape} and y {y.shape}; x must hold one row per sample and y "
                            "one label per sample")
        if y.ndim == 2 and y.shape[0] == x.shape[0] and y.shape[1] > 1 and np.isin(y, (0, 1)).all() \
                and (y.sum(1) == 1).all():
            raise UserError(f"{path}: y is one-hot, shape {y.shape}; give class indices (y.argmax(1))")
        if x.shape[0] != y.reshape(-1).shape[0]:
            raise UserError(f"{path}: x has {x.shape[0]} samples but y has {y.reshape(-1).shape[0]} labels")
        _check_numeric(path, x, y)
        xtr, xte, ytr, yte = _split(x, y.reshape(-1), test_fraction, seed)
        split = split_note(test_fraction, seed)
    else:
        raise UserError(f"{path}: expected arrays 'x' and 'y' (or x_train, y_train, x_test, y_test); "
                        f"found {sorted(arrays)}")
    _check_numeric(path, xtr, ytr)
    _check_numeric(path, xte, yte)
    if input_shape is not None:
        xtr, xte = (_reshape(path, a, input_shape) for a in (xtr, xte))
    ds = make_dataset(path.name, xtr, ytr, xte, yte, input_range=input_range)
    ds.split = split
    return ds


def load_table(path: Path, label_column: str, test_fraction: float, seed: int, input_range=None,
             input_shape=None) -> Dataset:
    """One table (CSV or Parquet), split by mlwarden."""
    x, y = read_table(path, label_column, input_shape)
    xtr, xte, ytr, yte = _split(x, y, test_fraction, seed)
    ds = make_dataset(path.name, xtr, ytr, xte, yte, input_range=input_range)
    ds.split = split_note(test_fraction, seed)
    return ds


TABLES = (".csv", ".parquet", ".pq")
PARQUET_MAX_CELLS = 100_000_000      # values (rows x columns) one Parquet file may unpack to
PARQUET_MAX_BYTES = 1 << 30          # and bytes, as its footer declares them


def read_table(path: Path, label_column: str, input_shape=None):
    """(features, labels) of a whole table: a CSV with a header, or a Parquet file; numeric columns only,
    the label column named by `label_column`."""
    if path.suffix.lower() == ".csv":
        x, y = _csv_arrays(path, label_column)
    else:
        x, y = _parquet_arrays(path, label_column)
    _check_numeric(path, x, y)
    if input_shape is not None:
        x = _reshape(path, x, input_shape)
    return x, (y.astype(np.int64) if np.all(y == np.round(y)) else y)


def _no_label(path: Path, label_column: str, header: list[str]) -> UserError:
    return UserError(f"{path}: no label column '{label_column}' (columns: {', '.join(header[:10])}"
                     f"{'...' if len(header) > 10 else ''}); set it with --label-column")


def _parquet_arrays(path: Path, label_column: str):
    from ..core.extras import require
    pq = require("pyarrow.parquet", "parquet", "reading Parquet data")
    try:
        meta = pq.ParquetFile(path).metadata   # the footer only: sizes are checked before anything is decompressed
        names = [meta.schema.column(i).path for i in range(meta.num_columns)]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise UserError(f"{path}: column '{dup}' appears more than once; column names must be unique")
        unpacked = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        cells = meta.num_rows * max(meta.num_columns, 1)
        if cells > PARQUET_MAX_CELLS or unpacked > PARQUET_MAX_BYTES:
            raise UserError(f"{path}: declares {meta.num_rows} rows x {meta.num_columns} columns "
                            f"({unpacked / 2**20:.0f} MiB unpacked); mlwarden reads at most {PARQUET_MAX_CELLS} "
                            f"values ({PARQUET_MAX_BYTES // 2**20} MiB): sample the rows first")
        table = pq.read_table(path)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a broken file raises is the user's one line
        msg = " ".join(str(e).split())[:160]
        raise UserError(f"{path}: not a readable Parquet file ({type(e).__name__}: {msg})") from None
    header = list(table.column_names)
    if label_column not in header:
        raise _no_label(path, label_column, header)
    if len(header) < 2:
        raise UserError(f"{path}: the only column is the label column '{label_column}'; a model needs at least one "
                        "feature column")
    cols = []
    for name in header:
        col = table.column(name)
        if col.null_count:
            raise UserError(f"{path}: column '{name}' has {col.null_count} missing values")
        arr = col.to_numpy()
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise UserError(f"{path}: column '{name}' has type {col.type}; features must be numeric (encode "
                            "categories as numbers or drop the column)")
        cols.append(arr.astype(np.float64))
    li = header.index(label_column)
    x = np.stack([c for i, c in enumerate(cols) if i != li], axis=1).astype(np.float32)
    return x, cols[li]


def _csv_arrays(path: Path, label_column: str):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:   # -sig: a byte-order mark is not a name
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read CSV ({e})") from None
    if len(rows) < 2:
        raise UserError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise _no_label(path, label_column, header)
    li = header.index(label_column)
    if len(header) < 2:
        raise UserError(f"{path}: the only column is the label column '{label_column}'; a model needs at least one "
                        "feature column")
    feats, labels = [], []
    for ln, r in enumerate(rows[1:], start=2):
        if not r:
            continue
        if len(r) != len(header):
            raise UserError(f"{path}: line {ln} has {len(r)} fields, the header has {len(header)}")
        try:
            vals = [float(v) for v in r]
        except ValueError:
            bad = next(i for i, v in enumerate(r) if not is_number(v))
            raise UserError(f"{path}: line {ln}, column '{header[bad]}': '{r[bad][:40]}' is not a number (features "
                            "must be numeric; encode categories as numbers or drop the column)") from None
        labels.append(vals[li])
        feats.append(vals[:li] + vals[li + 1:])
    return np.asarray(feats, dtype=np.float32), np.asarray(labels)


def load_pair(train: Path, test: Path, label_column: str, input_range=None, input_shape=None) -> Dataset:
    """The user's own split: a train table and a test table (CSV or Parquet, same columns), or two .npz files
    with x and y each. Nothing is split; the train rows are the members."""
    def read(path: Path):
        if path.suffix.lower() == ".npz":
            ds = load_npz(path, 0.5, 0, input_range, input_shape)
            if not ds.split.startswith("split by"):
                raise UserError(f"{path}: holds its own train/test split already; give it alone with --data")
            return (np.concatenate([ds.x_train.numpy(), ds.x_test.numpy()]),
                    np.concatenate([ds.y_train.numpy(), ds.y_test.numpy()]))
        return read_table(path, label_column, input_shape)
    kinds = {p.suffix.lower() if p.suffix.lower() != ".pq" else ".parquet" for p in (train, test)}
    if len(kinds) > 1:
        raise UserError(f"--data {train.name} and --test-data {test.name} are different formats; give both as "
                        "CSV, Parquet or .npz")
    (xtr, ytr), (xte, yte) = read(train), read(test)
    if xtr.shape[1:] != xte.shape[1:]:
        raise UserError(f"--data {train.name} has samples of shape {list(xtr.shape[1:])} but --test-data {test.name} "
                        f"has {list(xte.shape[1:])}")
    if kinds != {".npz"}:
        cols = [table_columns(p) for p in (train, test)]
        if cols[0] != cols[1]:
            raise UserError(f"--data {train.name} has columns {', '.join(cols[0][:10])} but --test-data {test.name} "
                            f"has {', '.join(cols[1][:10])}; give both files the same columns in the same order")
    ds = make_dataset(f"{train.name} + {test.name}", xtr, ytr, xte, yte, input_range=input_range)
    ds.split = f"given: train {train.name}, test {test.name}"
    return ds


def table_columns(path: Path) -> list[str]:
    """A table's column names, from a CSV's header row or a Parquet file's footer."""
    if path.suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                return [h.strip() for h in next(csv.reader(f), [])]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise UserError(f"{path}: cannot read CSV ({e})") from None
    from ..core.extras import require
    pq = require("pyarrow.parquet", "parquet", "reading Parquet data")
    try:
        return list(pq.read_schema(path).names)
    except Exception as e:  # noqa: BLE001 - whatever a broken file raises is the user's one line
        msg = " ".join(str(e).split())[:160]
        raise UserError(f"{path}: not a readable Parquet file ({type(e).__name__}: {msg})") from None


def _check_numeric(path, x, y):
    if not np.issubdtype(x.dtype, np.number):
        raise UserError(f"{path}: features have dtype {x.dtype}; numeric features are required")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        rows = int((~np.isfinite(x.reshape(x.shape[0], -1))).any(1).sum())
        raise UserError(f"{path}: features contain NaN or infinite values in {rows} rows")
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number):
        raise UserError(f"{path}: labels have dtype {y.dtype}; integer class labels are required")
    if np.issubdtype(y.dtype, np.floating) and (not np.isfinite(y).all() or np.any(y != np.round(y))):
        raise UserError(f"{path}: labels must be integer class ids (found NaN or fractional values)")
    if np.any(y < 0):
        raise UserError(f"{path}: labels must be 0..n_classes-1 (found negative values)")


def _reshape(path, x, shape):
    shape = tuple(int(s) for s in shape)
    if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
        raise UserError(f"{path}: samples have {int(np.prod(x.shape[1:]))} values; input_shape {list(shape)} "
                        f"needs {int(np.prod(shape))}")
    return x.reshape(x.shape[0], *shape)


def load_data(spec: str, *, label_column: str = "label", test_fraction: float = 0.25, seed: int = 0,
              input_range=None, input_shape=None, text_column: str = "text", raw: bool = False,
              test_spec: str | None = None) -> Dataset:
    """`raw`: built-in tabular sets keep their natural feature values (for a model served elsewhere).
    `test_spec`: the user's test file beside `spec`, the train file (their own split; see load_pair)."""
    if (spec not in BUILTIN and Path(spec).is_dir()) or (test_spec is not None and Path(test_spec).is_dir()):
        # one sub-folder per class (torchvision's ImageFolder layout)
        from .images import load_image_folders
        return load_image_folders(spec, test_spec, test_fraction=test_fraction, seed=seed, input_range=input_range,
                                  input_shape=input_shape)
    if test_spec is not None:
        paths = []
        for flag, s in (("--data", spec), ("--test-data", test_spec)):
            p = Path(s)
            if p.suffix.lower() not in (*TABLES, ".npz"):
                raise UserError(f"{flag} {s}: a train/test pair is two CSV, Parquet or .npz files")
            refuse_special(s, "data file")
            if not p.is_file():
                raise UserError(f"data file not found: {s}")
            paths.append(p)
        return load_pair(*paths, label_column, input_range, input_shape)
    if spec in BUILTIN:
        return load_builtin(spec, test_fraction, seed, raw=raw, input_range=input_range, input_shape=input_shape)
    messages = dict(label_column=label_column, text_column=text_column, test_fraction=test_fraction, seed=seed,
                    split=_split)
    if spec == SMS_SPAM:
        return load_messages(spec, **messages)
    if spec != "stdlib-docstrings":
        refuse_special(spec, "data file")   # a named pipe would be waited on forever
    if spec == "stdlib-docstrings" or spec.lower().endswith(".txt"):
        from ..text.corpus import load_text
        return load_text(spec, TEXT_DEMO_CHARS if spec == "stdlib-docstrings" else None)
    path = Path(spec)
    if not path.exists():
        raise UserError(f"data file not found: {spec} (built-in sets: {', '.join(BUILTIN)}, stdlib-docstrings, "
                        f"{SMS_SPAM})")
    if not path.is_file():
        raise UserError(f"{spec}: not a file")
    suffix = path.suffix.lower()
    if suffix == ".tsv" or (suffix == ".csv" and is_message_csv(path, text_column)):
        return load_messages(spec, **messages)
    if suffix == ".npz":
        return load_npz(path, test_fraction, seed, input_range, input_shape)
    if suffix in TABLES:
        return load_table(path, label_column, test_fraction, seed, input_range, input_shape)
    raise UserError(f"{spec}: unknown data format '{suffix}'; use .npz, .csv, .parquet, .tsv (labelled messages), "
                    ".txt (text corpus), an image folder (one sub-folder per class) or a built-in name")
