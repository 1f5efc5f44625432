"""Image folders as data: one sub-folder per class, the layout of torchvision's `ImageFolder`
(https://pytorch.org/vision/stable/generated/torchvision.datasets.ImageFolder.html), `images/cat/1.png`,
`images/dog/2.jpg`. Decoded by Pillow: PNG (ISO/IEC 15948), JPEG (ITU-T T.81, JFIF), BMP, GIF (its first
frame) and WebP (when Pillow was built with it).

- Classes are the sub-folders' names, sorted; label i is the i-th name (as torchvision numbers them), and
  the report lists them. Files beside the class folders are not read (a README, a labels file).
- Entries whose name starts with a dot (.DS_Store, .ipynb_checkpoints) are skipped everywhere. In a class
  folder every other entry must be an image file by its suffix: another file, a folder inside (nested classes
  are refused: usually the wrong level was given, e.g. the parent of train/ and test/), a named pipe, socket
  or device is a one-line error naming it. A pipe is never opened (`core.files.open_regular`).
- A symbolic link is followed only when it leads to a place inside the data folder; one leading out (or
  nowhere) is refused, so a folder from a stranger cannot make mlwarden read files elsewhere.
- Sizes come from the file headers before any pixel is decoded: at most `MAX_FILES` entries, each image at
  most `MAX_IMAGE_PIXELS` pixels (Pillow's decompression-bomb limit is set to it and its warning raised as an
  error), and at most `MAX_VALUES` values for the folders together (each image's pixels times the channels).
- Mode: grayscale (1 channel) when every image is 1-bit or 8-bit grayscale (modes 1, L, LA), otherwise RGB
  (3 channels). Alpha is dropped as torchvision's loader does (`convert("RGB")`: colours kept as stored, not
  composited on a background); 16-bit and floating-point images are refused; EXIF orientation is not
  applied (torchvision does not apply it either).
- Size: every image must have one size, unless `--input-shape C,H,W` is given: then C (1 or 3) sets the
  mode and each image is resized to H x W with Pillow's bilinear filter (antialiased when shrinking, as
  torchvision's `Resize`). Any other --input-shape reshapes the decoded samples (e.g. 256 for a flat model).
- Values: the 8-bit pixels divided by 255, in [0, 1] (or mapped onto a declared --input-range), float32,
  (N, C, H, W).
"""
from __future__ import annotations

import contextlib
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.data import Dataset, make_dataset
from ..core.errors import UserError
from ..core.files import open_regular, refuse_special
from .datasets import _reshape, _split, split_note

SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP"}
MAX_FILES = 200_000              # entries listed in all class folders together
MAX_IMAGE_PIXELS = 40_000_000    # pixels of one image (about 6300 x 6300), from its header
MAX_VALUES = 200_000_000         # values (pixels x channels) of all images together: 800 MB as float32
MAX_JPEG_SCANS = 64              # start-of-scan markers in one JPEG (encoders write about 1 to 12)
GRAY = {"1", "L", "LA"}
DEEP = {"I", "F"}                # Pillow's 32-bit integer and float modes (16-bit PNG, TIFF-like data)


@dataclass(frozen=True)
class ImageFile:
    """One image as its header describes it."""
    path: Path
    label: int
    size: tuple[int, int]   # (width, height)
    mode: str


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    classes: tuple[str, ...]
    files: tuple[ImageFile, ...]


def _pillow():
    from PIL import Image
    return Image


@contextlib.contextmanager
def _bomb_limits():
    """Pillow's decompression-bomb check at mlwarden's limit, its warning an error, for this block only."""
    Image = _pillow()
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _entries(folder: Path, real_root: str, seen: list[int]):
    """(name, is_folder) of the entries of `folder` that are read, sorted by name; hidden ones skipped, links
    leading out of the data folder and anything not a file or folder refused."""
    try:
        listing = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise UserError(f"{folder}: cannot list the folder ({e.strerror})") from None
    out = []
    for e in listing:
        seen[0] += 1
        if seen[0] > MAX_FILES:
            raise UserError(f"{folder}: more than {MAX_FILES} entries in the image folders; mlwarden reads at most "
                            f"{MAX_FILES} (sample the images first)")
        if e.name.startswith("."):
            continue
        if e.is_symlink():
            target = os.path.realpath(e.path)
            if os.path.commonpath([target, real_root]) != real_root or not os.path.exists(target):
                raise UserError(f"{e.path}: a link leading out of the data folder (to {target}); mlwarden follows "
                                "links only inside it")
        refuse_special(e.path, "image folder entry", folder=True)   # a pipe, socket or device: never opened
        out.append((e.name, stat.S_ISDIR(os.stat(e.path).st_mode)))
    return out


def list_folder(root: Path, seen: list[int] | None = None) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """The classes (sorted sub-folder names) and the (image path, label) pairs of an image folder."""
    seen = [0] if seen is None else seen
    real_root = os.path.realpath(root)
    classes = tuple(name for name, is_dir in _entries(root, real_root, seen) if is_dir)
    if len(classes) < 2:
        raise UserError(f"{root}: an image folder needs one sub-folder per class and at least two classes; found "
                        f"{len(classes)} ({', '.join(classes) or 'none'})")
    files = []
    for label, name in enumerate(classes):
        folder = root / name
        n = 0
        for entry, is_dir in _entries(folder, real_root, seen):
            path = folder / entry
            if is_dir:
                raise UserError(f"{path}: a folder inside the class folder {name}; give the folder whose "
                                "sub-folders are the classes (nested folders are not read)")
            if path.suffix.lower() not in SUFFIXES:
                raise UserError(f"{path}: not an image file by its suffix; a class folder holds only "
                                f"{', '.join(sorted(set(SUFFIXES)))} files (move the others out)")
            files.append((path, label))
            n += 1
        if n == 0:
            raise UserError(f"{folder}: the class folder '{name}' holds no image")
    return classes, files


def _unreadable(path: Path, e: BaseException) -> UserError:
    fmt = SUFFIXES[path.suffix.lower()]
    if type(e).__name__ == "UnidentifiedImageError":   # its message names a file descriptor, not the file
        return UserError(f"{path}: not a readable {fmt} image (not recognised as {fmt}: damaged, or another format "
                         f"under a {path.suffix} name)")
    msg = " ".join(str(e).split())[:160]
    return UserError(f"{path}: not a readable {fmt} image ({type(e).__name__}: {msg})")


@contextlib.contextmanager
def _opened(path: Path):
    """The image at `path` opened lazily (header only), as the format its suffix names; a bomb, a pipe or an
    unreadable file is one line."""
    Image = _pillow()
    fmt = SUFFIXES[path.suffix.lower()]
    if fmt not in Image.registered_extensions().values():
        raise UserError(f"{path}: this Pillow was built without {fmt} support; convert the image to PNG")
    with os.fdopen(open_regular(path, "image"), "rb") as f:
        try:
            im = Image.open(f, formats=[fmt])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise UserError(f"{path}: refused as a decompression bomb ({' '.join(str(e).split())[:160]})") from None
        except Exception as e:  # noqa: BLE001 - whatever a broken file raises is the user's one line
            raise _unreadable(path, e) from None
        with im:
            yield im


def _jpeg_scans(path: Path) -> int:
    """Start-of-scan markers (FF DA) in a JPEG file, counted up to MAX_JPEG_SCANS + 1 (ITU-T T.81 B.2.3; FF in
    entropy-coded data is always followed by 00, so the pair marks a scan). libjpeg walks every block of the
    image once per scan: a 6000 x 6000 progressive JPEG with 2,000 copies of a 59-byte AC scan took 9 s to
    decode instead of 0.3 s, and the time grows with the copies."""
    count, tail = 0, b""
    with os.fdopen(open_regular(path, "image"), "rb") as f:
        while count <= MAX_JPEG_SCANS and (chunk := f.read(1 << 20)):
            block = tail + chunk
            count += block.count(b"\xff\xda")
            tail = block[-1:]
    return count


def _header(path: Path, label: int) -> ImageFile:
    if SUFFIXES[path.suffix.lower()] == "JPEG" and (scans := _jpeg_scans(path)) > MAX_JPEG_SCANS:
        raise UserError(f"{path}: a JPEG of over {MAX_JPEG_SCANS} scans ({scans} counted); refused (each scan costs a "
                        "pass over the whole image when decoding)")
    with _opened(path) as im:
        w, h = im.size
        mode = im.mode
    if w * h == 0 or w * h > MAX_IMAGE_PIXELS:
        raise UserError(f"{path}: declares {w} x {h} pixels; mlwarden reads images of 1 to {MAX_IMAGE_PIXELS} "
                        "pixels (a larger one is refused as a possible decompression bomb)")
    if mode in DEEP or mode.startswith("I;"):
        raise UserError(f"{path}: a {mode} image (16-bit or floating point); mlwarden reads 8-bit images: convert it")
    return ImageFile(path, label, (w, h), mode)


def _decode(f: ImageFile, mode: str, size: tuple[int, int]) -> np.ndarray:
    """The pixels of one image in `mode`, resized to `size` (width, height) when it differs, as (C, H, W) uint8."""
    Image = _pillow()
    with _opened(f.path) as im:
        try:
            im.seek(0)   # a GIF or WebP animation: its first frame
            if im.mode != mode:
                im = im.convert(mode)
            if im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a truncated or corrupt image is the user's one line
            raise _unreadable(f.path, e) from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def read_folders(roots: list[Path], input_shape=None):
    """Read image folders with the same classes (a train folder and a test folder, or one alone) into
    ((x, y) per folder, classes): one mode and one size for all, checked from the headers first."""
    seen = [0]
    listed = [list_folder(r, seen) for r in roots]
    classes = listed[0][0]
    for r, (c, _) in zip(roots[1:], listed[1:]):
        if c != classes:
            raise UserError(f"--data {roots[0]} has classes {', '.join(classes[:10])} but --test-data {r} has "
                            f"{', '.join(c[:10])}; give both folders the same class sub-folders")
    with _bomb_limits():
        heads = [[_header(p, y) for p, y in files] for _, files in listed]
        every = [h for part in heads for h in part]
        shape = [int(s) for s in input_shape] if input_shape is not None else None
        resize = shape is not None and len(shape) == 3
        if resize and shape[0] not in (1, 3):
            raise UserError(f"--input-shape {','.join(map(str, shape))}: an image folder has 1 channel (grayscale) "
                            "or 3 (RGB)")
        mode = ("L" if shape[0] == 1 else "RGB") if resize else \
            ("L" if all(h.mode in GRAY for h in every) else "RGB")
        channels = 1 if mode == "L" else 3
        values = sum(h.size[0] * h.size[1] for h in every) * channels
        if resize:
            values = max(values, len(every) * channels * shape[1] * shape[2])
        if values > MAX_VALUES:
            raise UserError(f"{roots[0]}: {len(every)} images of {values:,} values in all; mlwarden reads at most "
                            f"{MAX_VALUES:,} (use fewer or smaller images)")
        if resize:
            size = (shape[2], shape[1])
        else:
            size = every[0].size
            other = next((h for h in every if h.size != size), None)
            if other is not None:
                raise UserError(f"images differ in size: {every[0].path} is {size[0]} x {size[1]}, {other.path} is "
                                f"{other.size[0]} x {other.size[1]}; give --input-shape C,H,W to resize them all")
        parts = []
        for part in heads:
            x = np.empty((len(part), channels, size[1], size[0]), dtype=np.uint8)
            for i, h in enumerate(part):
                x[i] = _decode(h, mode, size)
            parts.append((x, np.array([h.label for h in part], dtype=np.int64)))
    return parts, classes


def _scaled(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """8-bit pixels mapped onto [lo, hi] (0 to lo, 255 to hi), float32."""
    out = x.astype(np.float32)   # one float copy, scaled in place (the folders may hold 2 x 10^8 values)
    out *= np.float32((hi - lo) / 255.0)
    out += np.float32(lo)
    return out


def load_image_folders(train: str, test: str | None = None, *, test_fraction: float = 0.25, seed: int = 0,
                       input_range=None, input_shape=None) -> Dataset:
    """An image folder (split by mlwarden, stratified with `seed`), or a train folder and a test folder with the
    same class sub-folders (nothing split). See the module docstring for what is read and refused."""
    roots = [Path(train)] + ([Path(test)] if test is not None else [])
    for flag, r in zip(("--data", "--test-data"), roots):
        if not r.is_dir():
            raise UserError(f"{flag} {r}: not a folder; an image-folder pair is two folders with one sub-folder per "
                            "class (or give a CSV, Parquet or .npz pair)")
    lo, hi = (0.0, 1.0) if input_range is None else (float(input_range[0]), float(input_range[1]))
    if not hi > lo:
        raise UserError(f"--input-range {lo:g},{hi:g} is empty")
    parts, classes = read_folders(roots, input_shape)
    if test is None:   # the indices are split, and the 8-bit pixels picked, before anything is made float
        (x, y), = parts
        itr, ite, ytr, yte = _split(np.arange(len(y)), y, test_fraction, seed)
        parts = [(x[itr], ytr), (x[ite], yte)]
        split = split_note(test_fraction, seed)
    else:
        split = f"given: train {roots[0].name}, test {roots[1].name}"
    reshape = input_shape is not None and len(input_shape) != 3
    (xtr, ytr), (xte, yte) = [(_reshape(roots[0], _scaled(x, lo, hi), input_shape) if reshape else
                               _scaled(x, lo, hi), y) for x, y in parts]
    name = roots[0].name + (f" + {roots[1].name}" if test is not None else "")
    ds = make_dataset(f"{name} (image folders, {len(classes)} classes)", xtr, ytr, xte, yte, input_range=(lo, hi),
                      modality="image", n_classes=len(classes))
    ds.split = split
    ds.classes = classes
    return ds
