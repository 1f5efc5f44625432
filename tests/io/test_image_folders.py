"""Image folders as data (issue 33): one sub-folder per class, torchvision's ImageFolder layout, read with Pillow.
The pixels and labels read back are the ones written; a folder from a stranger (a decompression bomb, a link
out of the folder, a truncated file, a named pipe, too many files) is a one-line error and exit code 2."""
import json
import os
import struct
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from mlwarden.core.errors import UserError
from mlwarden.io import images
from mlwarden.io.datasets import load_data

torch.set_num_threads(1)


def _digits_folders(root, per_class=(30, 10)):
    """scikit-learn digits as a practitioner keeps them: 8x8 upscaled to 16x16 (each pixel repeated), 8-bit
    grayscale PNG, `train/<digit>/NNNN.png` and `test/<digit>/NNNN.png`. Returns the images (N, 16, 16) uint8
    and labels of each part, in the order the loader reads them (class by class, file names sorted)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    pix = np.round(d.images * 255 / 16).astype(np.uint8).repeat(2, 1).repeat(2, 2)
    parts = {"train": ([], []), "test": ([], [])}
    for c in range(10):
        idx = np.flatnonzero(d.target == c)[:sum(per_class)]
        for part, chosen in (("train", idx[:per_class[0]]), ("test", idx[per_class[0]:])):
            (root / part / str(c)).mkdir(parents=True, exist_ok=True)
            for i in chosen:
                Image.fromarray(pix[i], mode="L").save(root / part / str(c) / f"{i:04d}.png")
                parts[part][0].append(pix[i])
                parts[part][1].append(c)
    return {k: (np.stack(v[0]), np.array(v[1])) for k, v in parts.items()}


def image_folder_subject(root, epochs: int = 15):
    """For the contract suite: digits as train/ and test/ image folders under `root`, mlwarden's `cnn` recipe
    trained on them and saved as a .pt2 archive. Returns (network, data, model path, the CLI arguments that
    audit it: `mlwarden audit *args --threats ...`)."""
    from mlwarden.core.recipe import BUILTIN_RECIPES
    from mlwarden.io.models import save_module
    _digits_folders(root)
    ds = load_data(str(root / "train"), test_spec=str(root / "test"))
    net = BUILTIN_RECIPES["cnn"].with_(epochs=epochs).fit(ds.x_train, ds.y_train, ds.n_classes, seed=0)
    saved = save_module(net, ds, root / "cnn")
    assert saved["format"] == "export"
    args = ["--model", saved["path"], "--data", str(root / "train"), "--test-data", str(root / "test"),
            "--recipe", "cnn"]
    return net, ds, saved["path"], args


@pytest.fixture(scope="module")
def digit_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    return root, _digits_folders(root)


@pytest.fixture(scope="module")
def digit_cnn(tmp_path_factory):
    """(data, network, model path, CLI args) of `image_folder_subject`."""
    net, ds, path, args = image_folder_subject(tmp_path_factory.mktemp("subject"))
    return ds, net, path, args


def test_a_train_and_a_test_folder_read_back_the_pixels_and_labels_written(digit_folders):
    root, src = digit_folders
    ds = load_data(str(root / "train"), test_spec=str(root / "test"))
    assert ds.modality == "image" and ds.input_shape == (1, 16, 16) and ds.n_classes == 10
    assert ds.classes == tuple(str(c) for c in range(10))
    assert ds.split == "given: train train, test test"
    assert (ds.space.low, ds.space.high) == (0.0, 1.0) and ds.x_train.dtype == torch.float32
    for x, y, part in ((ds.x_train, ds.y_train, "train"), (ds.x_test, ds.y_test, "test")):
        assert np.abs(x.numpy()[:, 0] - src[part][0] / 255.0).max() < 1 / 255 / 2
        assert np.array_equal(y.numpy(), src[part][1])
    assert ds.describe()["classes"] == [str(c) for c in range(10)]


def test_one_folder_is_split_stratified_with_the_seed_and_the_report_says_so(digit_folders):
    root, src = digit_folders
    a, b, c = (load_data(str(root / "train"), seed=s) for s in (0, 0, 1))
    assert a.split.startswith("split by mlwarden: 25% test, seed 0, stratified") and "membership" in a.split
    assert len(a.y_train) + len(a.y_test) == len(src["train"][1])
    assert torch.bincount(a.y_test, minlength=10).min() >= 7   # 25% of 30 per class, in every class
    assert torch.equal(a.x_test, b.x_test) and not torch.equal(a.x_test, c.x_test)


def test_a_declared_range_and_a_flat_shape_apply_to_the_pixels(digit_folders):
    root, src = digit_folders
    ds = load_data(str(root / "train"), test_spec=str(root / "test"), input_range=(-1, 1), input_shape=(256,))
    assert ds.input_shape == (256,) and ds.modality == "image" and (ds.space.low, ds.space.high) == (-1.0, 1.0)
    want = src["test"][0].reshape(len(src["test"][0]), -1) / 255.0 * 2 - 1
    assert np.abs(ds.x_test.numpy() - want).max() < 1 / 255
    with pytest.raises(UserError, match="--input-range 1,0 is empty"):
        load_data(str(root / "train"), input_range=(1, 0))


def test_rgb_jpeg_and_an_rgba_png_read_as_rgb_with_alpha_dropped(tmp_path):
    rng = np.random.default_rng(0)
    src = {}
    for c, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
        (tmp_path / f"c{c}").mkdir()
        for i in range(4):
            px = np.clip(np.array(colour) + rng.integers(-20, 20, (12, 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px, mode="RGB").save(tmp_path / f"c{c}" / f"{i}.jpg", quality=95,
                                                       subsampling=0)
            src[(c, i)] = px
    rgba = np.dstack([src[(0, 0)], np.full((12, 10), 7, np.uint8)])   # nearly transparent: colours still kept
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "c0" / "9.png")
    gray = Image.fromarray(np.full((12, 10), 90, np.uint8), mode="L")
    gray.save(tmp_path / "c1" / "9.bmp")
    gray.save(tmp_path / "c2" / "9.gif")
    ds = load_data(str(tmp_path), test_fraction=0.4)
    assert ds.input_shape == (3, 12, 10)
    x = torch.cat([ds.x_train, ds.x_test]).numpy()
    y = torch.cat([ds.y_train, ds.y_test]).numpy()
    means = np.stack([x[y == c].mean((0, 2, 3)) for c in range(3)])
    assert (means.argmax(1) == np.arange(3)).all()   # each class's dominant channel is its colour
    got, _ = images.read_folders([tmp_path])
    (pixels, labels), = got
    assert (labels == np.repeat(np.arange(3), 5)).all()
    order = [(c, n) for c in range(3) for n in sorted(os.listdir(tmp_path / f"c{c}"))]
    for k, (c, name) in enumerate(order):
        if name.endswith(".jpg"):   # JPEG is lossy: Pillow's decoding exactly, within a few levels of what was written
            with Image.open(tmp_path / f"c{c}" / name) as im:
                assert np.array_equal(pixels[k].transpose(1, 2, 0), np.asarray(im.convert("RGB")))
            assert np.abs(pixels[k].transpose(1, 2, 0).astype(int) - src[(c, int(name[0]))]).mean() < 4
    assert np.array_equal(pixels[order.index((0, "9.png"))].transpose(1, 2, 0), src[(0, 0)])   # alpha dropped
    for c in (1, 2):   # a grayscale BMP and GIF among RGB images: the gray level in all three channels
        assert (pixels[order.index((c, "9.bmp" if c == 1 else "9.gif"))] == 90).all()


def test_mixed_sizes_need_input_shape_which_resizes_bilinearly(tmp_path):
    for c, size in ((0, (16, 16)), (1, (20, 24))):
        (tmp_path / f"k{c}").mkdir()
        for i in range(3):
            Image.fromarray(np.full(size[::-1], 40 + 100 * c + i, np.uint8), mode="L").save(
                tmp_path / f"k{c}" / f"{i}.png")
    with pytest.raises(UserError, match=r"k0.0\.png is 16 x 16, .*k1.0\.png is 20 x 24; give --input-shape") as e:
        load_data(str(tmp_path))
    assert "\n" not in str(e.value)
    ds = load_data(str(tmp_path), input_shape=(1, 8, 8), test_fraction=0.5)
    assert ds.input_shape == (1, 8, 8)
    x = torch.cat([ds.x_train, ds.x_test])
    levels = sorted(round(float(v) * 255) for v in x.amax((1, 2, 3)))
    assert levels == [40, 41, 42, 140, 141, 142]   # a flat image stays flat through the bilinear filter
    assert torch.equal(x.amax((1, 2, 3)), x.amin((1, 2, 3)))
    rgb = load_data(str(tmp_path), input_shape=(3, 8, 8), test_fraction=0.5)   # C=3 reads grayscale as RGB
    assert rgb.input_shape == (3, 8, 8) and torch.equal(rgb.x_train[:, 0], rgb.x_train[:, 2])
    with pytest.raises(UserError, match="1 channel .* or 3"):
        load_data(str(tmp_path), input_shape=(2, 8, 8))


def test_folder_layout_mistakes_are_one_line(tmp_path, digit_folders):
    root, _ = digit_folders
    one = tmp_path / "one"
    (one / "cat").mkdir(parents=True)
    Image.new("L", (4, 4)).save(one / "cat" / "a.png")
    with pytest.raises(UserError, match="at least two classes; found 1"):
        load_data(str(one))
    (one / "dog").mkdir()
    with pytest.raises(UserError, match="'dog' holds no image"):
        load_data(str(one))
    (one / "dog" / ".DS_Store").write_bytes(b"\0\1")   # hidden files are skipped
    for c in ("cat", "dog"):
        for i in range(2):
            Image.new("L", (4, 4)).save(one / c / f"b{i}.png")
    (one / "README.md").write_text("files beside the class folders are not read")
    assert load_data(str(one), test_fraction=0.5).classes == ("cat", "dog")
    (one / "dog" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"notes\.txt: not an image file by its suffix"):
        load_data(str(one))
    os.remove(one / "dog" / "notes.txt")
    (one / "dog" / "fake.png").write_bytes(b"GIF89a" + bytes(40))   # another format under a .png name
    with pytest.raises(UserError, match=r"fake\.png: not a readable PNG image \(not recognised as PNG"):
        load_data(str(one))
    os.remove(one / "dog" / "fake.png")
    (one / "dog" / "more").mkdir()
    with pytest.raises(UserError, match="a folder inside the class folder dog"):
        load_data(str(one))
    with pytest.raises(UserError, match="folder inside the class folder"):   # the parent of train/ and test/
        load_data(str(root))
    with pytest.raises(UserError, match="has classes 0, 1, .* but --test-data .* has cat, dog"):
        os.rmdir(one / "dog" / "more")
        load_data(str(root / "train"), test_spec=str(one))
    with pytest.raises(UserError, match="--test-data .*: not a folder"):
        load_data(str(root / "train"), test_spec=str(one / "cat" / "a.png"))


# -- hostile folders: one line, exit 2, nothing decoded that was refused -----------------------------------------

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring width x height 8-bit gray pixels (10^10 here) with one tiny compressed row:
    a decoder that trusts the header allocates 10 GB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) \
        + _chunk(b"IEND", b"")


def _cli(monkeypatch, capsys, *args):
    """`mlwarden ARGS` in this process (so a limit can be monkeypatched): (exit code, stderr)."""
    from mlwarden.cli.main import entry
    monkeypatch.setattr(sys, "argv", ["mlwarden", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        entry()
    return e.value.code, capsys.readouterr().err


def _hostile(kind: str, d, outside):
    for c in ("a", "b"):
        (d / c).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 10 * i).save(d / c / f"{i}.png")
    if kind == "bomb":
        (d / "a" / "3.png").write_bytes(bomb_png())
        return "decompression bomb|declares 100000 x 100000"
    if kind == "symlink":
        secret = outside / "secret.png"
        Image.new("L", (8, 8)).save(secret)
        os.symlink(secret, d / "b" / "3.png")
        return "a link leading out of the data folder"
    if kind == "truncated":   # the header intact, the pixel data cut: found when decoding, named all the same
        noise = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(noise, mode="L").save(d / "a" / "0.png")
        whole = (d / "a" / "0.png").read_bytes()
        (d / "a" / "0.png").write_bytes(whole[: len(whole) * 2 // 3])
        return r"0\.png: not a readable PNG image \(OSError: .*truncated"
    if kind == "fifo":
        os.mkfifo(d / "b" / "4.png")
        return r"4\.png: is a named pipe"
    if kind == "too-many":
        return "more than 5 entries"
    if kind == "jpeg-scans":   # a progressive JPEG whose last scan is repeated: each repeat a pass over all blocks
        Image.new("L", (64, 64), 99).save(d / "a" / "0.jpg", progressive=True)
        raw = (d / "a" / "0.jpg").read_bytes()
        (d / "a" / "0.jpg").write_bytes(raw[:-2] + raw[raw.rfind(b"\xff\xda"):-2] * 100 + raw[-2:])
        return r"0\.jpg: a JPEG of over 64 scans"
    if kind == "control-name":   # a name that would clear the terminal and print a fake verdict on lines of its own
        (d / "a" / "x\n\x1b[2J\x1b[32mno findings\x1b[0m\n.txt").write_text("x")
        return r"x\\n\\x1b\[2J\\x1b\[32mno findings\\x1b\[0m\\n\.txt: not an image file by its suffix"
    raise AssertionError(kind)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes and symlinks need a POSIX system")
@pytest.mark.parametrize("kind", ["bomb", "symlink", "truncated", "fifo", "too-many", "control-name",
                                  "jpeg-scans"])
def test_hostile_folders_are_one_line_and_exit_2(kind, digit_cnn, tmp_path, monkeypatch, capsys):
    d = tmp_path / "data"
    (tmp_path / "outside").mkdir()
    expected = _hostile(kind, d, tmp_path / "outside")
    if kind == "too-many":
        monkeypatch.setattr(images, "MAX_FILES", 5)
    opened = []
    real_open = images.open_regular
    monkeypatch.setattr(images, "open_regular", lambda p, what="": opened.append(str(p)) or real_open(p, what))
    code, err = _cli(monkeypatch, capsys, "audit", "--model", digit_cnn[2], "--data", d, "--out", tmp_path / "run", "--threats", "fgsm")
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    import re
    assert re.search(expected, " ".join(err.split())), err
    assert "Traceback" not in err and "\x1b" not in err and not (tmp_path / "run").exists()
    assert all("outside" not in p and not p.endswith("4.png") for p in opened)   # never opened the link or the pipe
    if kind == "bomb":   # refused from the header: the 10^10 pixels were never allocated
        assert images.MAX_IMAGE_PIXELS < 100_000 ** 2


def test_the_total_budget_and_deep_images_are_refused_from_the_headers_before_decoding(digit_folders, tmp_path,
                                                                                        monkeypatch):
    root, src = digit_folders
    monkeypatch.setattr(images, "_decode", lambda *a: pytest.fail("decoded an image of a refused folder"))
    monkeypatch.setattr(images, "MAX_VALUES", 256 * len(src["train"][1]) - 1)   # one value short
    with pytest.raises(UserError, match=r"300 images of 76,800 values in all; mlwarden reads at most 76,799"):
        load_data(str(root / "train"))
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / c / "deep.png")   # 16-bit grayscale
    with pytest.raises(UserError, match=r"deep\.png: a I;16 image \(16-bit or floating point\)"):
        load_data(str(tmp_path))


def test_pillows_own_bomb_limit_is_restored_after_reading(digit_folders):
    root, _ = digit_folders
    before = Image.MAX_IMAGE_PIXELS
    load_data(str(root / "train"), test_spec=str(root / "test"))
    assert Image.MAX_IMAGE_PIXELS == before


# -- end to end: a CNN trained on the folders, audited from the command line ------------------------------------

@pytest.mark.slow   # about 20 s: the audit runs in a subprocess
def test_cli_audit_of_a_cnn_on_image_folders(digit_cnn, tmp_path):
    from ..cli.run import mlwarden
    ds, net, _, args = digit_cnn
    with torch.no_grad():
        acc = float((net(ds.x_test).argmax(1) == ds.y_test).float().mean())
    assert acc > 0.5   # a real model: 10 classes, chance is 0.1
    out = tmp_path / "run"
    r = mlwarden("audit", *args, "--threats", "fgsm,pgd-linf", "--out", out)
    assert r.returncode in (0, 1), r.stderr
    report = json.loads((out / "report.json").read_text())
    data = report["subject"]["data"]
    assert data["classes"] == [str(c) for c in range(10)] and data["split"] == "given: train train, test test"
    assert data["input_shape"] == [1, 16, 16] and data["n_train"] == 300 and data["n_test"] == 100
    remedies = [f["remedy"]["command"] for f in report["findings"] if (f.get("remedy") or {}).get("command")]
    assert remedies and all(" ".join(args[2:6]) in c for c in remedies), remedies
    assert "classes (label 0 first): 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in (out / "report.md").read_text()
    assert "classes (label 0 first): 0, 1, 2" in (out / "report.html").read_text()
    done = {f["threat"]: f for f in report["findings"]}
    assert {"fgsm", "pgd-linf"} <= done.keys()
    assert all(done[t]["status"] != "error" for t in ("fgsm", "pgd-linf")), done
