"""Hugging Face `transformers` model folders (issue 33): a tiny BERT-style spam classifier, trained here on
the SMS Spam Collection and saved with save_pretrained, audited from the command line by the messages
threats; a tiny GPT-2-shaped causal LM loads and scores text; hostile folders (remote code, links out,
truncated or pickled weights) are refused with one line, and nothing in them runs. No download anywhere:
the tokenizer is trained here with `tokenizers`, the models are built from configs."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from mlwarden.core.errors import UserError

from ..cli.run import mlwarden
from ..conftest import SHARED_SMS

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow   # CLI audits end to end


def sms() -> tuple[list[str], np.ndarray]:
    rows = [ln.split("\t", 1) for ln in Path(SHARED_SMS).read_text(encoding="utf-8").split("\n") if ln.strip()]
    return [t for _, t in rows], np.array([int(label == "spam") for label, _ in rows])


def word_tokenizer(texts: list[str], max_length: int = 64):
    """A lower-cased word-level tokenizer with BERT's special tokens, trained on `texts` (no download)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=2000, min_frequency=2,
                                                             special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", eos_token="[SEP]", model_max_length=max_length)


def _train(model, tok, texts: list[str], batches, labels: np.ndarray | None = None):
    """AdamW (lr 3e-3) over `batches` of indices into texts: the classification loss on `labels`, or without
    labels the next-token loss (padding left out)."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for idx in batches:
        enc = tok([texts[j] for j in idx], truncation=True, max_length=64, padding=True, return_tensors="pt")
        y = (torch.as_tensor(labels[idx]) if labels is not None
             else enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100))
        loss = model(**enc, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def build_tiny_bert(folder: Path, texts: list[str], labels: np.ndarray, epochs: int = 1, seed: int = 0):
    """A BERT-style spam classifier (hidden 32, 2 layers, 2 heads), trained on (texts, labels) with its own
    word tokenizer, written with save_pretrained: the folder `mlwarden audit --model` takes. Returns
    (model, tokenizer)."""
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    tok = word_tokenizer(texts)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2, id2label={0: "ham", 1: "spam"},
                     label2id={"ham": 0, "spam": 1})
    rng = np.random.default_rng(seed)
    batches = [order[i:i + 32] for order in (rng.permutation(len(texts)) for _ in range(epochs))
               for i in range(0, len(order), 32)]
    model = _train(BertForSequenceClassification(cfg), tok, texts, batches, labels)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok


def build_tiny_gpt2(folder: Path, texts: list[str], steps: int = 60, seed: int = 0):
    """A GPT-2-shaped causal LM (n_embd 32, 2 layers) trained a few steps on `texts`, saved with
    save_pretrained. Returns (model, tokenizer)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    tok = word_tokenizer(texts)
    sep = tok.sep_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                       bos_token_id=sep, eos_token_id=sep, pad_token_id=tok.pad_token_id))
    rng = np.random.default_rng(seed)
    model = _train(model, tok, texts, [rng.choice(len(texts), 32, replace=False) for _ in range(steps)])
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok


@pytest.fixture(scope="module")
def split():
    texts, labels = sms()
    order = np.random.default_rng(0).permutation(len(texts))
    return texts, labels, order[:2500], order[2500:]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, split):
    texts, labels, tr, _ = split
    folder = tmp_path_factory.mktemp("hf") / "tiny-bert"
    build_tiny_bert(folder, [texts[i] for i in tr], labels[tr])
    return folder


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, split):
    texts, _, tr, _ = split
    folder = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    build_tiny_gpt2(folder, [texts[i] for i in tr])
    return folder


def test_the_loaded_classifier_beats_the_majority_class_on_held_out_messages(bert_dir, split):
    from mlwarden.io.hf import HFTextClassifier, load_folder
    texts, labels, _, te = split
    flt = load_folder(bert_dir)
    assert isinstance(flt, HFTextClassifier) and flt.max_length == 64
    held = [texts[i] for i in te]
    acc = float((flt.verdicts(held) == 2 * labels[te]).mean())   # verdicts: 0 ham, 2 spam
    majority = max(labels[te].mean(), 1 - labels[te].mean())
    n = len(te)
    assert acc - 2 * np.sqrt(acc * (1 - acc) / n) > majority, (acc, majority)


def test_audit_of_a_save_pretrained_folder_from_the_cli(bert_dir, split, tmp_path):
    """The messages threats (poisoning through fine-tuning, the model-file scan) run on the folder."""
    texts, labels, _, te = split
    data = tmp_path / "sms.tsv"
    keep = te[:900]
    data.write_text("".join(f"{'spam' if labels[i] else 'ham'}\t{texts[i]}\n" for i in keep), encoding="utf-8")
    cfg = tmp_path / "hf.toml"
    cfg.write_text('[threats.spam-dictionary]\ncontrols = [0.05]\nheadline_control = 0.05\n'
                   'dictionaries = ["optimal"]\nsplit = []\n'
                   '[threats.spam-focused]\nknown_fractions = [0.5]\ntargets = 2\n')
    out = tmp_path / "run"
    r = mlwarden("audit", "--config", cfg, "--model", bert_dir, "--data", data, "--threats", "model-corruption",
                 "--out", out)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    by = {f["threat"]: f for f in rep["findings"]}
    for name in ("spam-dictionary", "spam-focused"):
        assert by[name]["status"] == "ok", by[name]
        assert any(m["n"] for m in by[name]["metrics"])
    assert "BertForSequenceClassification" in by["spam-dictionary"]["details"]["notes"][0]
    scan = by["unsafe-model-file"]
    assert scan["status"] == "ok" and scan["details"]["format"] == "huggingface"


def test_a_causal_lm_folder_loads_and_scores_text(gpt2_dir, split):
    from mlwarden.io.hf import HFCausalLM, load_folder
    from transformers import GPT2LMHeadModel
    texts, _, tr, te = split
    lm = load_folder(gpt2_dir)
    assert isinstance(lm, HFCausalLM)
    held = [texts[i] for i in te[:200]]
    ll = lm.sequence_log_likelihood(held)
    assert np.isfinite(ll).all()
    assert ll.mean() > -np.log(len(lm.tokenizer)) + 1.0   # trained: well above a uniform guess over the vocabulary
    fresh = GPT2LMHeadModel(lm.model.config).eval()      # the same shape untrained: the loaded weights matter
    lm_fresh = HFCausalLM(fresh, lm.tokenizer, lm.folder)
    assert ll.mean() > lm_fresh.sequence_log_likelihood(held).mean() + 1.0
    # the continuation scores agree with the whole text's token log-likelihoods
    whole = lm.token_log_probs(["call me later"])[0]
    n = len(lm.tokenizer("call")["input_ids"])
    assert lm.continuation_log_prob("call", [" me later"])[0] == pytest.approx(float(whole[n - 1:].sum()))


def test_auditing_a_causal_lm_says_no_threat_takes_it_yet(gpt2_dir, split, tmp_path):
    texts, labels, _, te = split
    data = tmp_path / "sms.tsv"
    data.write_text("".join(f"{'spam' if labels[i] else 'ham'}\t{texts[i]}\n" for i in te[:200]), encoding="utf-8")
    r = mlwarden("audit", "--model", gpt2_dir, "--data", data, "--out", tmp_path / "run")
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip().splitlines()
    assert "GPT2LMHeadModel" in err[-1] and "causal language model" in err[-1] and "Traceback" not in r.stderr


def test_loading_touches_no_network(bert_dir, monkeypatch):
    from mlwarden.io.hf import load_folder
    calls = []
    real = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: calls.append(a) or real(self, *a))
    before = os.environ.get("HF_HUB_OFFLINE")
    load_folder(bert_dir)
    assert calls == []
    assert os.environ.get("HF_HUB_OFFLINE") == before   # the offline switches are set only around the load


# -- hostile folders: each refused with one line (exit 2), and nothing in them runs ----------------------

class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile(kind: str, bert_dir: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    """(folder, marker file that exists only if the folder's code ran, a word the error names)."""
    folder = tmp_path / kind
    shutil.copytree(bert_dir, folder)
    marker = tmp_path / f"{kind}.ran"
    cfg = json.loads((folder / "config.json").read_text())
    if kind == "auto-map":
        cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
        (folder / "config.json").write_text(json.dumps(cfg))
        return folder, marker, "auto_map"
    if kind == "code-file":
        (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
        return folder, marker, "modeling_evil.py"
    if kind == "symlink-out":
        outside = tmp_path / "elsewhere.safetensors"
        shutil.move(folder / "model.safetensors", outside)
        os.symlink(outside, folder / "model.safetensors")
        return folder, marker, "outside the model folder"
    if kind == "truncated":
        raw = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(raw[:len(raw) // 2])
        return folder, marker, "model.safetensors"
    if kind == "pickle-bin":
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(str(marker))))
        return folder, marker, "pytorch_model.bin"
    if kind == "plain-bin":   # a weights-only pickle: still not read (safetensors only), with how to convert
        (folder / "model.safetensors").unlink()
        torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")
        return folder, marker, "safetensors only"
    if kind == "unknown-type":
        cfg["model_type"] = "evil"
        (folder / "config.json").write_text(json.dumps(cfg))
        return folder, marker, "model_type"
    if kind == "nan-config":
        (folder / "config.json").write_text(json.dumps(cfg).replace('"hidden_size": 32', '"hidden_size": NaN'))
        return folder, marker, "strict JSON"
    if kind == "huge-config":
        (folder / "config.json").write_text(json.dumps({**cfg, "padding": " " * (1 << 20)}))
        return folder, marker, "bytes"
    if kind == "attn-kernel":   # a Hub kernel (native code) transformers would load from the user's cache
        cfg["attn_implementation"] = "kernels-community/flash-attn"
        (folder / "config.json").write_text(json.dumps(cfg))
        return folder, marker, "attention kernel"
    if kind == "fifo":   # opening a named pipe would wait forever
        os.mkfifo(folder / "vocab.txt")
        return folder, marker, "not a regular file"
    raise AssertionError(kind)


KINDS = ["auto-map", "code-file", "symlink-out", "truncated", "pickle-bin", "plain-bin", "unknown-type", "nan-config",
         "huge-config", "fifo", "attn-kernel"]


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_folders_are_refused_in_one_line(kind, bert_dir, tmp_path):
    from mlwarden.io.hf import inspect_folder
    folder, marker, word = _hostile(kind, bert_dir, tmp_path)
    with pytest.raises(UserError) as e:
        inspect_folder(folder)
    assert word in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["normalizer", "template"])
def test_a_tokenizer_that_makes_texts_huge_is_refused_when_loaded(kind, bert_dir, tmp_path):
    """Replace normalizers of " " by 1,000 spaces multiply a text's length by 1,000 each (five of them made
    "a test message" 10^15 characters: the Rust allocator aborted the process); a TemplateProcessing of
    100,000 [CLS] made every sequence longer than the model's positions (exit 3). Both are one line."""
    from mlwarden.io.hf import load_folder
    folder = tmp_path / kind
    shutil.copytree(bert_dir, folder)
    tok = json.loads((folder / "tokenizer.json").read_text())
    if kind == "normalizer":
        tok["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Replace", "pattern": {"String": " "}, "content": " " * 1000}] * 2}
        word = "over 256 times longer"
    else:
        tok["post_processor"]["single"] = [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}] * 100_000 + [
            {"Sequence": {"id": "A", "type_id": 0}}]
        word = "adds 100000 special tokens"
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(UserError) as e:
        load_folder(folder)
    assert word in str(e.value) and "\n" not in str(e.value)


def test_a_tokenizer_regex_past_its_backtracking_limit_is_a_one_line_error(bert_dir, tmp_path):
    """A Split pre-tokenizer of (\\w|\\s|\\w)*$ passes the short probe texts but backtracks exponentially on a
    message with a long run of words before punctuation: Oniguruma stops it and tokenizers panics, which
    reaches Python as pyo3's PanicException, a BaseException (the audit ended in a traceback, exit 1)."""
    from mlwarden.io.hf import load_folder
    folder = tmp_path / "regex"
    shutil.copytree(bert_dir, folder)
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(\\w|\\s|\\w)*$"}, "behavior": "Isolated", "invert": False},
        tok["pre_tokenizer"]]}
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    loaded = load_folder(folder)
    with pytest.raises(UserError, match="the tokenizer failed on a message") as e:
        loaded.spam_scores(["Go until jurong point crazy Available only in bugis n great world la e buffet!"])
    assert "\n" not in str(e.value)


def test_a_config_far_larger_than_its_weights_is_refused_before_anything_is_allocated(bert_dir, tmp_path):
    """transformers initialises every parameter the safetensors file lacks: a config of 64 layers 4,096 wide
    (every size within the config limits) beside a weights file of two numbers asked for 2 x 10^12 parameters."""
    from safetensors.torch import save_file
    from mlwarden.io.hf import load_folder
    folder = tmp_path / "tiny-weights"
    shutil.copytree(bert_dir, folder)
    save_file({"unused.x": torch.zeros(2)}, folder / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(vocab_size=4_000_000, hidden_size=4096, intermediate_size=4_000_000, num_hidden_layers=64,
               num_attention_heads=32)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"describes [\d,]+ parameters but the weights hold 2 numbers"):
        load_folder(folder)


@pytest.mark.parametrize("kind", ["code-file", "pickle-bin"])
def test_hostile_folders_exit_2_from_the_cli(kind, bert_dir, tmp_path, split):
    texts, labels, _, te = split
    folder, marker, word = _hostile(kind, bert_dir, tmp_path)
    data = tmp_path / "sms.tsv"
    data.write_text("".join(f"{'spam' if labels[i] else 'ham'}\t{texts[i]}\n" for i in te[:200]), encoding="utf-8")
    r = mlwarden("audit", "--model", folder, "--data", data, "--out", tmp_path / "run")
    assert r.returncode == 2, r.stderr[-2000:]
    assert word in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr
    assert not marker.exists()


def test_a_folder_classifier_needs_labelled_messages(bert_dir):
    from mlwarden.io.datasets import load_data
    from mlwarden.io.models import load_target
    with pytest.raises(UserError, match="labelled messages"):
        load_target(str(bert_dir), load_data("iris"))


def test_access_is_scores_at_most(bert_dir, split, tmp_path):
    from mlwarden.io.datasets import load_data
    from mlwarden.io.models import load_target
    texts, labels, _, te = split
    data = tmp_path / "sms.tsv"
    data.write_text("".join(f"{'spam' if labels[i] else 'ham'}\t{texts[i]}\n" for i in te[:100]), encoding="utf-8")
    ds = load_data(str(data))
    target = load_target(str(bert_dir), ds, access="labels")
    assert target.access.value == "labels" and target.labels(ds.x_test[:8]).shape == (8,)
    with pytest.raises(UserError, match="at most scores"):
        load_target(str(bert_dir), ds, access="white-box")
    with pytest.raises(UserError, match="is a folder"):
        load_target(str(data), ds, fmt="hf")


def test_a_trainer_output_folder_loads_and_its_training_state_is_never_opened(bert_dir, tmp_path):
    """`Trainer.save_model` writes training_args.bin (a pickle) beside the model: loading never opens it, so the
    folder loads as it is, and a payload in it does not run; a payload in a file the loader reads still refuses
    the folder."""
    from mlwarden.io.hf import inspect_folder, load_folder
    folder = tmp_path / "trainer-out"
    shutil.copytree(bert_dir, folder)
    marker = tmp_path / "trainer.ran"
    (folder / "training_args.bin").write_bytes(pickle.dumps(_Payload(str(marker))))
    (folder / "trainer_state.json").write_text("{}")
    inspect_folder(folder)
    load_folder(folder)
    assert not marker.exists()
    (folder / "model.safetensors").rename(folder / "elsewhere")
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(UserError):
        inspect_folder(folder)
    assert not marker.exists()
