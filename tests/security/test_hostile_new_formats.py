"""Hostile files for the loaders added after the generated corpus (tests/security/generator.py): `--arch` weights,
XGBoost files, Hugging Face save_pretrained folders, ONNX external data and image folders, each crafted as a
stranger would hand it over and run through `mlwarden audit` as a user types it. Every case runs in one process
(the corpus's DRIVER, with each case's stderr kept apart) under a Linux inotify watch on a folder of secrets
beside the cases: the exit code is 2 with one `error:` line naming the problem and no traceback, no payload
wrote its marker, and no file in the secrets folder was opened, by a path or through a link (inotify sees
the file, whatever name reached it; the audit hook and strace see only the name).

Found by these cases (each failed before its fix): a `torch.save`d ResNet-18 head expanded from one number,
fc.weight [4194304, 512] in 4 bytes, built an 8 GiB network (exit 3 under a memory limit); an XGBoost
best_iteration past the rounds failed at predict with XGBoost's check message; a tokenizer.json of 40 chained
ByteLevel normalizers doubled a text per pass and the Rust allocator aborted the process (exit 134), and so
did 30 pairs of Replace(" ", U+FDFA) and NFKC (each counted as growing a text by nothing) and 40 ByteLevel
pre-tokenizers (the pre-tokenizer was not checked); `mlwarden scan FOLDER` read the files that links in the
folder led to, outside it; a LightGBM text model whose parameters section holds a line without ':'
crashed the process in LightGBM's parser (SIGSEGV), and so did an objective line naming another class count
than the header's, or none, at the first prediction; an XGBoost tree_info entry of -5 corrupted the heap
(SIGABRT) at the first prediction. Passed (exit 0, or an error from onnxruntime instead of the scan) before their
fixes: an ONNX tensor giving its external-data 'location' twice, the second out of the folder (the scan checked the
first, the converter and onnx read the last); an XGBoost objective num_class of 100000 or 1 beside the learner's 3;
an attention kernel, auto_map or custom architecture in a Hugging Face config's text_config or vision_config (only
the top level was checked), and an auto_map below the top level or trust_remote_code in tokenizer_config.json
(inert, since the tokenizer is read by class, but refused as in config.json); three SentencePiece Precompiled normalizers rewriting " " as 100 spaces (2,000,012
characters from "a test message"; counted as growing nothing)."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from .corpus import _onnx_external
from .generator import SPELLINGS, _torch_zip

pytestmark = pytest.mark.slow   # CLI audits end to end, in one process

# One process for every case; each case's stderr (fd 2) goes to its own file, so the one-line rule is checked
# per case.
DRIVER = r"""
import json, os, sys
from mlwarden.cli.main import entry
codes = []
for argv, err in json.loads(sys.argv[1]):
    sys.stderr.flush()
    saved, fd = os.dup(2), os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    sys.argv = ["mlwarden", *argv]
    try:
        entry()
        codes.append(0)
    except SystemExit as e:
        codes.append(e.code if isinstance(e.code, int) else 1)
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(fd)
        os.close(saved)
print(json.dumps(codes))
"""

IN_ACCESS, IN_OPEN = 0x1, 0x20


@dataclass
class Case:
    name: str
    argv: list[str]
    word: str | None     # what the one error line names; None: the file is clean-looking and must load (exit 0)


def _watch(folder: Path) -> int:
    """An inotify descriptor reporting every open or read of a file in `folder`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    assert fd >= 0 and libc.inotify_add_watch(fd, str(folder).encode(), IN_OPEN | IN_ACCESS) >= 0
    return fd


def _events(fd: int) -> list[str]:
    """Names of the files opened or read since the watch began."""
    names = []
    try:
        buf = os.read(fd, 1 << 16)
    except BlockingIOError:
        return names
    i = 0
    while i < len(buf):
        _, mask, _, n = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16:i + 16 + n].rstrip(bytes(1)).decode()
        names.append(f"{name} ({mask:#x})")
        i += 16 + n
    return names


def _tiny_bert(folder: Path) -> None:
    """A 2-class BERT-style classifier (hidden 16, one layer) and a word-level tokenizer, as save_pretrained
    writes them."""
    from tokenizers import (
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        PreTrainedTokenizerFast,
    )
    texts = ["win a free prize now", "hello how are you", "call me later", "free money claim now"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=64)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(fast), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=64, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)


def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _add_external_key(path: Path, key: str, value: str) -> None:
    """One more external_data entry on the ONNX model's initializer: a key it already has, given again."""
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    e = model.graph.initializer[0].external_data.add()
    e.key, e.value = key, value
    onnx.save(model, str(path))


def _charsmap(src: str, dst: str) -> str:
    """A SentencePiece precompiled_charsmap (as tokenizer.json holds it, base64) rewriting the one-byte character
    `src` as `dst`: [u32 trie bytes][darts-clone double array: root, src's node, its leaf][dst NUL]."""
    import base64
    (byte,) = src.encode()
    units = [0] * 256
    units[0] = 1 << 10                                   # the root: its children at 1 ^ byte
    units[1 ^ byte] = (1 << 10) | (1 << 8) | byte        # src's node, labelled, with a leaf at (1 ^ byte) ^ 1
    units[(1 ^ byte) ^ 1] = 1 << 31                      # the leaf: offset 0 in the replacements
    trie = struct.pack(f"<{len(units)}I", *units)
    return base64.b64encode(struct.pack("<I", len(trie)) + trie + dst.encode() + bytes(1)).decode()


def build(root: Path) -> tuple[list[Case], Path, Path]:
    """The hostile cases, the secrets folder (watched) and the folder payloads would write their markers to."""
    from PIL import Image

    from mlwarden.io.archnets import resnet18
    cases_dir, secrets, sentinel = root / "cases", root / "secrets", root / "sentinel"
    for d in (cases_dir, secrets, sentinel):
        d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    # data: an RGB image folder (2 classes) and labelled messages
    images = cases_dir / "images"
    for c in ("a", "b"):
        (images / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / c / f"{i}.png")
    messages = cases_dir / "messages.tsv"
    messages.write_text("".join(f"ham\thello how are you {i}\nspam\twin a free prize now {i}\n" for i in range(30)))
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(secrets / "secret.png")
    cases: list[Case] = []

    def audit(name: str, model: Path | None, data: Path | str, word: str | None, *extra: str) -> None:
        argv = ["audit", *(["--model", str(model)] if model else []), "--data", str(data), "--threats",
                "unsafe-model-file", "--out", str(root / "runs" / name), *extra]
        cases.append(Case(name, argv, word))

    # --arch: a head expanded from one stored number, and a state dict whose pickle runs a command
    sd = resnet18(num_classes=2).state_dict()
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1).expand(1 << 22, 512), torch.zeros(1).expand(1 << 22)
    torch.save(sd, cases_dir / "expanded-head.pt")
    audit("arch-expanded-head", cases_dir / "expanded-head.pt", images, "not stored as its shape says",
          "--arch", "resnet18")
    (cases_dir / "payload.pt").write_bytes(_torch_zip(SPELLINGS["system"](sentinel, "arch-payload")))
    audit("arch-payload", cases_dir / "payload.pt", images, "unsafe", "--arch", "resnet18")
    # XGBoost: an early-stopping round the model does not have
    import xgboost
    from sklearn.datasets import load_iris
    x, y = load_iris(return_X_y=True)
    xgboost.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(x, y).save_model(cases_dir / "xgb.json")
    _edit_json(cases_dir / "xgb.json", lambda d: d["learner"]["attributes"].__setitem__("best_iteration", "9" * 20))
    audit("xgb-best-iteration", cases_dir / "xgb.json", "iris", "best_iteration")
    shutil.copy(cases_dir / "xgb.json", cases_dir / "xgb-tree-info.json")   # a tree's output group of -5: heap
    _edit_json(cases_dir / "xgb-tree-info.json", lambda d: d["learner"].update(attributes={}) or d["learner"][
        "gradient_booster"]["model"]["tree_info"].__setitem__(-1, -5))   # corrupted (SIGABRT) at predict
    audit("xgb-tree-info", cases_dir / "xgb-tree-info.json", "iris", "tree_info")
    for n in (100000, 1):   # the objective's class count against the learner's 3: XGBoost loaded it silently
        shutil.copy(cases_dir / "xgb.json", cases_dir / f"xgb-objective-{n}.json")
        _edit_json(cases_dir / f"xgb-objective-{n}.json", lambda d, n=n: d["learner"].update(attributes={}) or d[
            "learner"]["objective"]["softmax_multiclass_param"].__setitem__("num_class", str(n)))
        audit(f"xgb-objective-{n}", cases_dir / f"xgb-objective-{n}.json", "iris", "is not the learner's num_class 3")
    # LightGBM: a parameters line without its ':' (LightGBM's parser crashed the process with SIGSEGV)
    import lightgbm
    text = lightgbm.LGBMClassifier(n_estimators=3, num_leaves=4, n_jobs=1, verbose=-1).fit(x, y).booster_ \
        .model_to_string()
    assert "\n[machines: ]\n" in text
    (cases_dir / "lgb.txt").write_text(text.replace("\n[machines: ]\n", "\n[machines:\n"))
    audit("lgb-parameter-line", cases_dir / "lgb.txt", "iris", "is not [name: value]")
    assert "\nobjective=multiclass num_class:3\n" in text   # the objective's class count sizes its output (SIGSEGV)
    for tag, objective in (("huge", "multiclass num_class:99999999"), ("empty", "")):
        (cases_dir / f"lgb-{tag}.txt").write_text(text.replace("\nobjective=multiclass num_class:3\n",
                                                               f"\nobjective={objective}\n"))
        audit(f"lgb-objective-{tag}", cases_dir / f"lgb-{tag}.txt", "iris", "does not match its num_class=3")
    # Hugging Face folders
    bert = root / "bert"
    _tiny_bert(bert)

    def hf(name: str) -> Path:
        shutil.copytree(bert, cases_dir / name)
        return cases_dir / name
    f = hf("hf-bytelevel")
    _edit_json(f / "tokenizer.json", lambda t: t.__setitem__("normalizer", {
        "type": "Sequence", "normalizers": [t["normalizer"]] + [{"type": "ByteLevel"}] * 40}))
    audit("hf-bytelevel", f, messages, "over 256 times longer")
    f = hf("hf-nfkc-interleaved")   # U+FDFA is 18 characters in NFKC, 3 of them spaces: 4 times longer per pair
    _edit_json(f / "tokenizer.json", lambda t: t.__setitem__("normalizer", {
        "type": "Sequence", "normalizers": [t["normalizer"]] + [
            {"type": "Replace", "pattern": {"String": " "}, "content": "\ufdfa"}, {"type": "NFKC"}] * 30}))
    audit("hf-nfkc-interleaved", f, messages, "over 256 times longer")
    f = hf("hf-bytelevel-pre-tokenizer")   # the pieces of a ByteLevel pre-tokenizer grow the same way
    _edit_json(f / "tokenizer.json", lambda t: t.__setitem__("pre_tokenizer", {
        "type": "Sequence", "pretokenizers": [t["pre_tokenizer"]] + [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}] * 40}))
    audit("hf-bytelevel-pre-tokenizer", f, messages, "over 256 times longer")
    # fields choosing code, in a composite model's sub-configs (Gemma3's text_config, vision_config): only the top
    # level was checked, and these loaded with exit 0
    kernel = "kernels-community/flash-attn"
    for name, sub, word in (
            ("hf-sub-attn-kernel", {"text_config": {"attn_implementation": kernel}}, "text_config.attn_implementation"),
            ("hf-sub-attn-dict", {"vision_config": {"_attn_implementation": {"": "sdpa", "text_config": kernel}}},
             "attention kernel"),
            ("hf-sub-experts-kernel", {"text_config": {"experts_implementation": "deepgemm"}}, "experts kernel"),
            ("hf-sub-auto-map", {"text_config": {"auto_map": {"AutoModel": "modeling_evil.EvilModel"}}},
             "text_config.auto_map"),
            ("hf-trust-remote-code", {"trust_remote_code": True}, "remote code"),
            ("hf-sub-architecture", {"vision_config": {"architectures": ["EvilVisionModel"]}},
             "does not ship with transformers"),
            ("hf-sub-config-builtin", {"text_config": {"attn_implementation": "sdpa", "architectures": ["BertModel"]},
                                       "vision_config": {"attn_implementation": None}}, None)):
        f = hf(name)
        _edit_json(f / "config.json", lambda c, sub=sub: c.update(sub))
        audit(name, f, messages, word)
    # the same fields in tokenizer_config.json, at any depth (only a top-level auto_map was refused)
    for name, sub, word in (
            ("hf-tokenizer-sub-auto-map", {"extra": {"auto_map": {"AutoTokenizer": ["tok_evil.EvilTok", None]}}},
             "extra.auto_map"),
            ("hf-tokenizer-trust-remote-code", {"trust_remote_code": True}, "remote code")):
        f = hf(name)
        _edit_json(f / "tokenizer_config.json", lambda c, sub=sub: c.update(sub))
        audit(name, f, messages, word)
    f = hf("hf-precompiled")   # SentencePiece rules rewriting " " as 100 spaces, 3 times: counted as 1 and loaded
    _edit_json(f / "tokenizer.json", lambda t: t.__setitem__("normalizer", {
        "type": "Sequence", "normalizers": [t["normalizer"]] + [
            {"type": "Precompiled", "precompiled_charsmap": _charsmap(" ", " " * 100)}] * 3}))
    audit("hf-precompiled", f, messages, "over 256 times longer")
    f = hf("hf-tokenizer-link-out")
    shutil.copy(f / "tokenizer.json", secrets / "tokenizer.json")
    (f / "tokenizer.json").unlink()
    os.symlink(secrets / "tokenizer.json", f / "tokenizer.json")
    audit("hf-tokenizer-link-out", f, messages, "outside the model folder")
    f = hf("hf-tokenizer-file-named-outside")   # transformers takes the folder's tokenizer.json, not the config's
    shutil.copy(f / "tokenizer.json", secrets / "named.json")
    _edit_json(f / "tokenizer_config.json", lambda c: c.update(tokenizer_file=str(secrets / "named.json"),
                                                                vocab_file=str(secrets / "named.json")))
    audit("hf-tokenizer-file-named-outside", f, messages, None)
    # ONNX: external data through a link in the model's own folder
    onnx_dir = cases_dir / "onnx-link"
    onnx_dir.mkdir()
    (secrets / "weights.bin").write_bytes(bytes(32))
    os.symlink(secrets / "weights.bin", onnx_dir / "w.bin")
    audit("onnx-external-link-out", _onnx_external(onnx_dir, "model.onnx", "w.bin"), "breast-cancer",
          "outside the model's folder")
    dup_dir = cases_dir / "onnx-duplicate-location"   # a second location key, read by onnx, went unchecked
    dup_dir.mkdir()
    (dup_dir / "w.bin").write_bytes(bytes(32))
    _add_external_key(_onnx_external(dup_dir, "model.onnx", "w.bin"), "location", "../../secrets/weights.bin")
    audit("onnx-duplicate-location", dup_dir / "model.onnx", "breast-cancer", "'location' twice")
    # image folder: an image that links out of the folder
    linked = cases_dir / "images-link-out"
    shutil.copytree(images, linked)
    os.symlink(secrets / "secret.png", linked / "b" / "9.png")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    torch.export.save(torch.export.export(net, (torch.zeros(2, 3, 16, 16),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), cases_dir / "net.pt2")
    audit("images-link-out", cases_dir / "net.pt2", linked, "leading out of the data folder")
    cases.append(Case("scan-folder-link-out", ["scan", str(linked)], "outside the folder"))   # scan read it
    return cases, secrets, sentinel


def test_hostile_new_format_files_exit_2_in_one_line_and_touch_nothing_outside(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("xgboost")
    pytest.importorskip("lightgbm")
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases, secrets, sentinel = build(tmp_path)
    errs = tmp_path / "stderr"
    errs.mkdir()
    plan = [(c.argv, str(errs / c.name)) for c in cases]
    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mpl"), COLUMNS="200", OMP_NUM_THREADS="1",
               MLWARDEN_CACHE=str(tmp_path / "cache"))
    watch = _watch(secrets)
    try:
        _events(watch)   # (nothing yet: the files were written before the watch)
        r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(plan)], capture_output=True, text=True, env=env,
                           timeout=600, cwd=tmp_path, check=False)
        opened = _events(watch)
    finally:
        os.close(watch)
    assert r.returncode == 0, r.stderr[-3000:]    # no crash or abort of the process
    codes = dict(zip([c.name for c in cases], json.loads(r.stdout.strip().splitlines()[-1])))
    assert codes == {c.name: 2 if c.word else 0 for c in cases}
    for c in cases:
        text = (errs / c.name).read_text()
        assert "Traceback" not in text, (c.name, text[-2000:])
        if c.word:
            lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
            assert len(lines) == 1 and c.word in lines[0], (c.name, text[-2000:])
    assert opened == []                       # no secret opened or read, by a name or through a link
    assert sorted(os.listdir(sentinel)) == []  # no payload ran


def test_the_unicode_growth_factors_are_the_largest_over_every_code_point():
    """hf.UNICODE_GROWTH bounds how many characters a tokenizer's Unicode normalizer makes of one."""
    import unicodedata

    from mlwarden.io.hf import UNICODE_GROWTH
    chars = [chr(i) for i in range(sys.maxunicode + 1) if not 0xD800 <= i <= 0xDFFF]
    measured = {form: max(len(unicodedata.normalize(form, c)) for c in chars)
                for form in ("NFC", "NFD", "NFKC", "NFKD")}
    assert UNICODE_GROWTH == {**measured, "Lowercase": max(len(c.lower()) for c in chars)}
