"""Hugging Face `transformers` model folders as audit targets: what `model.save_pretrained(dir)` and
`tokenizer.save_pretrained(dir)` write (config.json, model.safetensors or its sharded index, tokenizer.json and
tokenizer_config.json; https://huggingface.co/docs/transformers/main_classes/model#transformers.PreTrainedModel.save_pretrained).

Never remote code: a config or tokenizer config with `auto_map` and any `*.py` file in the folder are refused,
`model_type` must name an architecture that ships with transformers and `architectures` its sequence-classification
or causal-LM class for that type, and loading runs with `trust_remote_code=False`, `local_files_only=True` and the
Hugging Face offline switches set. Every file is scanned first (io/scan), symlinks leaving the folder are refused,
and the load runs under the load guard (io/guard.py). Weights come from safetensors only
(https://github.com/huggingface/safetensors: a JSON header and raw tensor bytes, no code): a `pytorch_model.bin`
(a pickle) is refused with how to convert it, never unpickled. The tokenizer is the folder's `tokenizer.json`,
read by the Rust `tokenizers` library through `PreTrainedTokenizerFast` (no tokenizer class resolved by name).

Sequence classifiers become spam-filter targets (text/filters.py's filter protocol), queried with raw text:
the messages modality's black-box threats run on them, and retraining (the poisoning threats' recipe)
fine-tunes a copy of the folder's weights. Causal LMs load and pass a forward pass as `HFCausalLM`, whose
sequence log-likelihoods the language-model threats can use; the audit has no threat for them yet and says so."""
from __future__ import annotations

import contextlib
import copy
import inspect
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.data import Dataset
from ..core.errors import UserError
from ..core.files import ModelFiles
from ..core.extras import require
from ..core.target import Access, Target
from .guard import guarded_load
from .scan import MODEL_SUFFIXES, FileScan, UnsafeModelFile, scan_file

CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# What `Trainer.save_model` and its checkpoints write beside the model: pickles of the training state that
# loading a model never opens (transformers does not read them; neither does mlwarden), so they are not scanned
# as part of the model and do not refuse it. `mlwarden scan` still judges each of them as a file.
TRAINER_STATE = re.compile(r"(training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth|"
                           r"trainer_state\.json)")
MAX_CONFIG_BYTES = 1 << 20        # config.json, tokenizer_config.json, the shard index: small JSON documents
MAX_FILES = 10_000
MAX_TOKENIZER_BYTES = 256 << 20   # tokenizer.json: the largest vocabularies in use take tens of MB
MAX_DIMENSION = 1 << 22           # any size in the config (vocabulary, width, positions)
MAX_LAYERS = 1024
MAX_NORMALIZER_GROWTH = 256       # how many times longer the tokenizer's normalizer may make a text, at most
# The most characters one character becomes (Unicode's normalization forms, UAX #15; full lowercase mapping), as
# measured over every code point with unicodedata (tests/security/test_hostile_new_formats.py checks them)
UNICODE_GROWTH = {"NFC": 3, "NFD": 4, "NFKC": 18, "NFKD": 18, "Lowercase": 2}
MAX_ADDED_TOKENS = 64             # special tokens its post-processor adds to one sequence ([CLS] ... [SEP]: 2)
SIZE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "max_position_embeddings", "n_positions", "n_ctx",
             "n_embd", "n_inner", "d_model", "num_labels")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "num_attention_heads", "n_head")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")
OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
CLASSIFIER, CAUSAL_LM = "sequence-classification", "causal-lm"


@dataclass
class HFFolder:
    """A model folder that passed every check, before anything in it is loaded."""
    path: Path                 # resolved
    config: dict
    model_type: str
    architecture: str
    task: str                  # CLASSIFIER or CAUSAL_LM
    scan: FileScan             # every file's references, as one scan of the folder


@dataclass
class FineTune:
    """How the poisoning threats retrain a classifier: the folder's weights fine-tuned on the (poisoned)
    training messages with AdamW (the usual BERT fine-tuning setting of Devlin et al. 2019, one epoch)."""
    epochs: int = 1
    lr: float = 5e-5
    batch_size: int = 32
    seed: int = 0


# -- the folder, checked without loading anything ---------------------------------------------------------

def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def read_json(path: Path, where: str) -> dict:
    """A small JSON object, parsed strictly: size-bounded, no NaN or Infinity, no duplicate keys."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise UserError(f"{where}: {size} bytes; a {path.name} over {MAX_CONFIG_BYTES} bytes is refused")

    def pairs(items):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
        return dict(items)

    def constant(name):
        raise ValueError(f"{name} is not JSON")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"{where}: not strict JSON ({str(e)[:120]})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{where}: not a JSON object")
    return doc


def _files(root: Path) -> list[Path]:
    """Every file in the folder, with the folder's own rules: no code, no link leaving it, nothing special."""
    out = []
    for dirpath, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if not (Path(dirpath) == root and d == ".git")]   # git's own objects: never loaded
        for name in [*dirs, *names]:
            p = Path(dirpath) / name
            rel = p.relative_to(root)
            if p.is_symlink():
                real = Path(os.path.realpath(p))
                if not real.is_relative_to(root):
                    raise UserError(f"{root}: {rel} is a symbolic link to {real}, outside the model folder; refused")
                if real.is_dir():
                    raise UserError(f"{root}: {rel} is a symbolic link to a folder; refused")
            if name in dirs:
                continue
            if name.endswith((".py", ".pyc", ".pyw", ".so", ".pyd", ".dylib")):
                raise UserError(f"{root}: {rel} is code; a model folder with custom code is refused (mlwarden never "
                                "runs a model's own code: use an architecture that ships with transformers)")
            if not p.is_file():
                raise UserError(f"{root}: {rel} is not a regular file")
            out.append(p)
            if len(out) > MAX_FILES:
                raise UserError(f"{root}: over {MAX_FILES} files; not a model folder")
    return sorted(out)


def _scan(root: Path, files: list[Path], trust: frozenset[str]) -> FileScan:
    """Every file through the scanner: a model-like file (by content or by name) that fails it is refused
    as the unsafe-model-file finding; plain text and JSON files (config, tokenizer) pass."""
    t0 = time.monotonic()
    folder = FileScan(str(root), "huggingface")
    for p in files:
        if p.parent == root and TRAINER_STATE.fullmatch(p.name):
            continue   # never opened by the loader (see TRAINER_STATE)
        s = scan_file(p, trust)
        plain = s.format == "unknown" or (s.format == "pickle" and s.safe and not s.references)
        if plain and p.suffix.lower() not in MODEL_SUFFIXES and p.name not in PICKLED_WEIGHTS:
            continue
        if not s.safe:
            raise UnsafeModelFile(s)
        folder.references += s.references
    folder.seconds = time.monotonic() - t0
    return folder


def _task(model_type: str, arch: str, where: str) -> str:
    from transformers.models.auto import modeling_auto as ma
    if ma.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(model_type) == arch:
        return CLASSIFIER
    if ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type) == arch:
        return CAUSAL_LM
    want = [n for n in (ma.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(model_type),
                        ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)) if n]
    raise UserError(f"{where}: architecture {arch[:80]!r} is not one mlwarden audits for model_type {model_type!r} "
                    f"({' or '.join(want) or 'this type has no sequence classifier or causal LM'})")


# fields choosing the code that computes a layer, and transformers' own torch implementations of each: any other
# value names a Hub kernel repo (kernels-community/...: native code) or an optional kernel package
IMPLEMENTATIONS = {"attn_implementation": ("attention", ("eager", "sdpa")),
                   "experts_implementation": ("experts", ("eager", "batched_mm", "grouped_mm"))}
MAX_CONFIG_DEPTH = 32


def _check_code_fields(node, where: str, classes: frozenset[str], path: str = "", depth: int = 0) -> None:
    """Every field of a config, at any depth (a composite model's text_config, vision_config, ... are configs
    too, and transformers applies their fields), that would pick code to run: auto_map (custom code),
    trust_remote_code, quantization_config (a quantizer's kernels), an attention or experts implementation other
    than transformers' own (`IMPLEMENTATIONS`; a dict value maps sub-configs to one), and an `architectures`
    entry naming a class that does not ship with transformers (`classes`)."""
    if depth > MAX_CONFIG_DEPTH:
        raise UserError(f"{where}: {path} is nested over {MAX_CONFIG_DEPTH} levels deep")
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        at = f"{path}.{k}" if path else str(k)
        if k == "auto_map":
            raise UserError(f"{where}: {at} names custom code; mlwarden never runs remote code (a model "
                            "folder must use an architecture that ships with transformers)")
        if k == "trust_remote_code" and v is not False:
            raise UserError(f"{where}: {at} asks for remote code; mlwarden never runs remote code")
        if k == "quantization_config":
            raise UserError(f"{where}: quantized models ({at}) are not supported; save the model unquantized")
        if isinstance(k, str) and k.lstrip("_") in IMPLEMENTATIONS and v is not None:
            kind, ok = IMPLEMENTATIONS[k.lstrip("_")]
            bad = [x for x in (v.values() if isinstance(v, dict) else [v]) if x is not None and x not in ok]
            if bad:   # a Hub kernel repo (kernels-community/...) is native code
                raise UserError(f"{where}: {at} {str(bad[0])[:60]!r} names an {kind} kernel to load; "
                                f"mlwarden runs transformers' own {kind} only ({' or '.join(ok)})")
        if k == "architectures" and v is not None and not (
                isinstance(v, list) and all(isinstance(a, str) and a in classes for a in v)):
            raise UserError(f"{where}: {at} {str(v)[:80]} names a model class that does not ship with transformers")
        _check_code_fields(v, where, classes, at, depth + 1)


def _check_config(cfg: dict, where: str) -> tuple[str, str]:
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    _check_code_fields(cfg, where, frozenset(dir(transformers)))
    mt = cfg.get("model_type")
    if not isinstance(mt, str) or mt not in CONFIG_MAPPING_NAMES:
        raise UserError(f"{where}: model_type {str(mt)[:60]!r} is not an architecture that ships with transformers")
    archs = cfg.get("architectures")
    if not (isinstance(archs, list) and len(archs) == 1 and isinstance(archs[0], str)):
        raise UserError(f"{where}: 'architectures' must name one model class (as save_pretrained writes it)")
    for k in (*SIZE_KEYS, *LAYER_KEYS):
        v = cfg.get(k)
        top = MAX_LAYERS if k in LAYER_KEYS else MAX_DIMENSION
        if v is not None and not (type(v) is int and 0 < v <= top):
            raise UserError(f"{where}: {k} = {str(v)[:40]} is not a whole number in 1..{top}")
    return mt, archs[0]


def _check_weights(root: Path, names: set[str]) -> None:
    if WEIGHTS in names:
        return
    if WEIGHTS_INDEX in names:
        index = read_json(root / WEIGHTS_INDEX, f"{root / WEIGHTS_INDEX}")
        shards = index.get("weight_map")
        if not isinstance(shards, dict) or not shards:
            raise UserError(f"{root / WEIGHTS_INDEX}: no weight_map")
        for shard in set(shards.values()):
            if not (isinstance(shard, str) and shard.endswith(".safetensors") and shard in names):
                raise UserError(f"{root / WEIGHTS_INDEX}: shard {str(shard)[:80]!r} is not a .safetensors file of "
                                "this folder")
        return
    if names & set(PICKLED_WEIGHTS):
        raise UserError(f"{root}: the weights are pytorch_model.bin, a pickle; mlwarden reads Hugging Face weights "
                        "from safetensors only: where you trust the file, load it and save_pretrained the model again "
                        "(that writes model.safetensors)")
    raise UserError(f"{root}: no {WEIGHTS} (save the model with save_pretrained)")


def inspect_folder(path: str | Path, trust: frozenset[str] = frozenset()) -> HFFolder:
    """The folder's files scanned and its config checked; nothing loaded."""
    root = Path(os.path.realpath(path))
    if not root.is_dir():
        raise UserError(f"{path}: a Hugging Face model is a folder (what save_pretrained writes)")
    if not (root / CONFIG).is_file():
        raise UserError(f"{path}: no {CONFIG}; not a Hugging Face model folder (save it with save_pretrained)")
    files = _files(root)
    names = {p.relative_to(root).as_posix() for p in files}
    scan = _scan(root, files, trust)
    cfg = read_json(root / CONFIG, f"{path}/{CONFIG}")
    require("transformers", "hf", "loading a Hugging Face model folder")   # after the checks that need no import
    mt, arch = _check_config(cfg, f"{path}/{CONFIG}")
    if TOKENIZER_CONFIG in names:   # read by class (PreTrainedTokenizerFast), never by name; checked as the config is
        import transformers
        _check_code_fields(read_json(root / TOKENIZER_CONFIG, f"{path}/{TOKENIZER_CONFIG}"),
                           f"{path}/{TOKENIZER_CONFIG}", frozenset(dir(transformers)))
    if TOKENIZER not in names:
        raise UserError(f"{path}: no {TOKENIZER} (save a fast tokenizer with tokenizer.save_pretrained into the folder)")
    if (size := (root / TOKENIZER).stat().st_size) > MAX_TOKENIZER_BYTES:
        raise UserError(f"{path}/{TOKENIZER}: {size} bytes; over {MAX_TOKENIZER_BYTES} bytes is refused")
    _check_weights(root, names)
    return HFFolder(root, cfg, mt, arch, _task(mt, arch, f"{path}/{CONFIG}"), scan)


# -- loading -------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def offline():
    """The Hugging Face libraries' offline switches, set for the block (and read again by huggingface_hub)."""
    saved = {k: os.environ.get(k) for k in OFFLINE}
    os.environ.update({k: "1" for k in OFFLINE})
    constants = None
    try:
        import huggingface_hub.constants as constants
        was = getattr(constants, "HF_HUB_OFFLINE", None)
        constants.HF_HUB_OFFLINE = True
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = was
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


MISSING_SLACK = 1 << 24   # parameters the weights may leave to initialisation (a new classification head)


def _check_size(folder: HFFolder, auto, config) -> None:
    """The network the config describes, built on the meta device (nothing allocated), may hold at most
    MISSING_SLACK parameters more than the safetensors files hold: transformers initialises every parameter
    the weights lack, so a config of 64 layers 4096 wide beside a 448-byte model.safetensors allocated tens of
    GiB. The files' sizes come from their headers (https://github.com/huggingface/safetensors)."""
    from safetensors import safe_open
    with torch.device("meta"):
        n_params = sum(p.numel() for p in auto.from_config(config).parameters())
    held = 0
    for shard in sorted(folder.path.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            held += sum(int(np.prod(f.get_slice(k).get_shape(), dtype=object)) for k in f.keys())
    if n_params > held + MISSING_SLACK:
        raise UserError(f"{folder.path}: config.json describes {n_params:,} parameters but the weights hold "
                        f"{held:,} numbers; refused (transformers would initialise the missing ones)")


def _load(folder: HFFolder):
    """(model, tokenizer) from the checked folder: built-in classes only, safetensors weights, as float32, eval."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PreTrainedTokenizerFast
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.utils import logging as hf_logging
    auto = AutoModelForSequenceClassification if folder.task == CLASSIFIER else AutoModelForCausalLM
    where = str(folder.path)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()   # no progress bars or config warnings on the audit's terminal
    hf_logging.disable_progress_bar()
    try:
        config = CONFIG_MAPPING[folder.model_type].from_dict(dict(folder.config))
        _check_size(folder, auto, config)
        model = auto.from_pretrained(where, config=config, trust_remote_code=False, local_files_only=True,
                                     use_safetensors=True).float()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - weights that do not fit the config, a header the scan let through
        raise UserError(f"{where}: transformers cannot load the model ({_one_line(e)})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    try:
        tok = PreTrainedTokenizerFast.from_pretrained(where, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{where}: cannot read {TOKENIZER} ({_one_line(e)})") from None
    check_tokenizer(tok.backend_tokenizer, f"{where}/{TOKENIZER}")
    if type(model).__name__ != folder.architecture:
        raise UserError(f"{where}: config.json names {folder.architecture} but transformers built "
                        f"{type(model).__name__}")
    return model.eval(), tok


def _charsmap_growth(charsmap, where: str) -> int:
    """The most characters a SentencePiece `Precompiled` normalizer writes for one it reads: its charsmap is
    [u32 trie size][darts-clone double-array trie][replacements, each ended by NUL] (spm_precompiled, as
    sentencepiece's normalizer.cc writes it), the trie mapping a prefix of at least one character to an offset in
    the replacements, so no replacement is longer than its longest NUL-separated piece."""
    import base64
    import binascii
    try:
        raw = base64.b64decode(charsmap, validate=True) if isinstance(charsmap, str) else bytes(charsmap)
        trie = int.from_bytes(raw[:4], "little")
    except (binascii.Error, TypeError, ValueError):
        raise UserError(f"{where}: a Precompiled normalizer whose precompiled_charsmap is not base64 bytes") from None
    if len(raw) < 4 or 4 + trie > len(raw):
        raise UserError(f"{where}: a Precompiled normalizer whose precompiled_charsmap is cut short")
    pieces = raw[4 + trie:].split(b"\0")
    return max(len(p.decode("utf-8", "replace")) for p in pieces)


def check_tokenizer(backend, where: str) -> None:
    """Refuse a tokenizer.json that makes a short message huge, read from the loaded `tokenizers.Tokenizer`
    (https://huggingface.co/docs/tokenizers/api/normalizers): five chained Replace normalizers of " " by 1,000
    spaces turn "a test message" into 10^15 characters (the Rust allocator aborts the process, no error to
    catch), and a TemplateProcessing of 100,000 [CLS] tokens makes every sequence longer than the model's
    positions. A Replace multiplies the length by its content's length (by one more where the pattern is a
    regex or empty: it may match between characters); a Prepend by its prefix's; a ByteLevel normalizer by 4
    (https://huggingface.co/docs/tokenizers/api/normalizers: one character per UTF-8 byte, so chained ones
    double a non-ASCII text's length each time); a Unicode normal form or a lowercasing by the most characters
    it makes of one (`UNICODE_GROWTH`: U+FDFA is 18 characters in NFKC, 3 of them spaces, so Replace(" ", U+FDFA)
    and NFKC, 30 times over, grew "a test message" 4-fold per pair, each counted as 1 before). The pre-tokenizer
    counts too (ByteLevel 4, Metaspace 2: a ByteLevel pre-tokenizer's pieces grow as the normalizer's text does).
    A SentencePiece `Precompiled` normalizer counts its longest replacement (`_charsmap_growth`): three chained
    ones rewriting " " as 100 spaces were counted as 1 and loaded."""
    growth, todo = 1, [json.loads(part.__getstate__()) for part in (backend.normalizer, backend.pre_tokenizer)
                       if part is not None]   # a pre-tokenizer's ByteLevel maps bytes to characters too
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo += node
        elif isinstance(node, dict):
            todo += [v for v in node.values() if isinstance(v, (dict, list))]
            kind, pattern = node.get("type"), node.get("pattern")
            if kind == "Replace":
                literal = isinstance(pattern, dict) and isinstance(pattern.get("String"), str) and pattern["String"]
                growth *= max(1, len(str(node.get("content", ""))) + (0 if literal else 1))
            elif kind == "Prepend":
                growth *= max(1, len(str(node.get("prepend", ""))))
            elif kind == "ByteLevel":   # each UTF-8 byte becomes a character: up to 4 per character, and
                growth *= 4             # compounding (40 in a Sequence aborted the process on "a test message")
            elif kind == "Metaspace" and node.get("prepend_scheme") != "never":   # a ▁ before each piece
                growth *= 2
            elif kind in UNICODE_GROWTH:
                growth *= UNICODE_GROWTH[kind]
            elif kind == "Precompiled":   # SentencePiece's rules: its longest replacement per character
                growth *= max(1, _charsmap_growth(node.get("precompiled_charsmap"), where))
            elif kind == "BertNormalizer":   # a space either side of a CJK character, NFD to strip accents, lowercase
                accents = node.get("strip_accents") or (node.get("strip_accents") is None and node.get("lowercase"))
                growth *= (3 if node.get("handle_chinese_chars") else 1) * (UNICODE_GROWTH["NFD"] if accents else 1) \
                    * (UNICODE_GROWTH["Lowercase"] if node.get("lowercase") else 1)
            if growth > MAX_NORMALIZER_GROWTH:
                raise UserError(f"{where}: its normalizer or pre-tokenizer can make a text over "
                                f"{MAX_NORMALIZER_GROWTH} times longer (Replace or Prepend with long contents, chained "
                                "ByteLevel, Unicode forms or SentencePiece Precompiled rules); refused")
    post = backend.post_processor
    added = max(post.num_special_tokens_to_add(False), post.num_special_tokens_to_add(True)) if post else 0
    if added > MAX_ADDED_TOKENS:
        raise UserError(f"{where}: its post-processor adds {added} special tokens to a sequence (at most "
                        f"{MAX_ADDED_TOKENS}); refused")


def load_folder(path: str | Path, trust: frozenset[str] = frozenset()):
    """A checked folder loaded and probed: an `HFTextClassifier` or an `HFCausalLM`."""
    folder = inspect_folder(path, trust)
    with offline():
        require("transformers", "hf", "loading a Hugging Face model folder")
        with guarded_load(str(folder.path), trust):
            model, tok = _load(folder)
    cls = HFTextClassifier if folder.task == CLASSIFIER else HFCausalLM
    loaded = cls(model, tok, folder)
    try:
        loaded.probe()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a folder whose model fails on two short test texts is bad input
        raise UserError(f"{folder.path}: the model fails on a short test text ({_one_line(e)})") from None
    return loaded


@dataclass
class _Base:
    model: torch.nn.Module
    tokenizer: object
    folder: HFFolder
    batch_size: int = 64
    max_length: int = field(init=False)

    def __post_init__(self):
        cap = min((self.folder.config[k] for k in POSITION_KEYS if isinstance(self.folder.config.get(k), int)),
                  default=512)
        own = getattr(self.tokenizer, "model_max_length", None)
        self.max_length = min(cap, own) if isinstance(own, int) and 0 < own < 1_000_000 else cap
        vocab = getattr(self.model.config, "vocab_size", None)
        if isinstance(vocab, int) and len(self.tokenizer) > vocab:
            raise UserError(f"{self.folder.path}: the tokenizer has {len(self.tokenizer)} tokens but the model's "
                            f"vocabulary has {vocab}")
        if self.tokenizer.pad_token is None:   # GPT-2-style tokenizers: pad with the end-of-text token
            fill = self.tokenizer.eos_token or self.tokenizer.unk_token
            if fill is None:
                raise UserError(f"{self.folder.path}: the tokenizer has no padding, end or unknown token to batch with")
            self.tokenizer.pad_token = fill
        self.tokenizer.padding_side = "right"
        self.inputs = set(inspect.signature(self.model.forward).parameters)
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    @property
    def name(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return f"{self.folder.architecture} ({n / 1e6:.2f}M parameters, Hugging Face folder {self.folder.path.name})"

    def encode(self, texts: list[str]) -> dict:
        try:
            enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True,
                                 return_tensors="pt")
        except BaseException as e:   # a Rust panic comes as pyo3's PanicException, a BaseException
            if type(e).__name__ != "PanicException":
                raise
            # e.g. a Split pre-tokenizer's regex, (\w|\s|\w)*$, past Oniguruma's backtracking limit on a message
            raise UserError(f"{self.folder.path}/{TOKENIZER}: the tokenizer failed on a message "
                            f"({' '.join(str(e).split())[:160]})") from None
        return {k: v for k, v in enc.items() if k in self.inputs}   # e.g. no token_type_ids for DistilBERT

    def batches(self, texts: list[str]):
        """(positions, encoded batch) of similar lengths (less padding), in order of length."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            yield idx, self.encode([texts[j] for j in idx])


class HFTextClassifier(_Base):
    """A `*ForSequenceClassification` model as a spam filter (text/filters.py's protocol): `spam_scores`
    is the softmax probability of the spam class (the id2label entry named spam, else class 1), `verdicts`
    thresholds it at 0.5 (no unsure band), `fit` fine-tunes a copy of the folder's weights."""

    def __init__(self, model, tokenizer, folder: HFFolder, tune: FineTune | None = None, start=None):
        super().__init__(model, tokenizer, folder)
        self.tune = tune or FineTune()
        self.start = start if start is not None else model   # the folder's weights: what fit starts from
        labels = {int(k): str(v).lower() for k, v in (getattr(model.config, "id2label", None) or {}).items()}
        self.spam = next((i for i, v in labels.items() if "spam" in v), 1)

    @property
    def recipe_name(self) -> str:
        t = self.tune
        return (f"fine-tuning {self.folder.architecture} from the folder's weights ({t.epochs} epoch"
                f"{'s' * (t.epochs != 1)}, AdamW lr {t.lr:g}, batch {t.batch_size})")

    def probe(self) -> None:
        p = self.spam_scores(["a test message", "win a free prize now"])
        if not np.isfinite(p).all():
            raise UserError(f"{self.folder.path}: the model returns NaN or infinite scores")

    @torch.no_grad()
    def spam_scores(self, texts) -> np.ndarray:
        texts = list(texts)
        out = np.zeros(len(texts))
        self.model.eval()
        for idx, enc in self.batches(texts):
            out[idx] = torch.softmax(self.model(**enc).logits.float(), 1)[:, self.spam].numpy()
        return out

    def verdicts(self, texts) -> np.ndarray:
        from ..text.spambayes import HAM, SPAM
        return np.where(self.spam_scores(texts) >= 0.5, SPAM, HAM)

    def to_files(self, name: str) -> ModelFiles:
        """The fine-tuned model and its tokenizer as `save_pretrained` writes them, in a folder `name`
        (config.json, model.safetensors, tokenizer.json, tokenizer_config.json): a Hugging Face folder that
        `mlwarden audit --model` loads like the user's. Written by transformers into a temporary folder and read
        back, so the run directory gets bytes through its own checked write."""
        import tempfile
        try:
            with tempfile.TemporaryDirectory() as tmp:
                self.model.save_pretrained(tmp, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp)
                files = {f"{name}/{p.relative_to(tmp).as_posix()}": p.read_bytes()
                         for p in sorted(Path(tmp).rglob("*")) if p.is_file()}
        except OSError as e:   # a full or unwritable temporary folder: say which, in one line
            raise UserError(f"saving the hardened model needs room in the temporary folder {tempfile.gettempdir()} "
                            f"(set TMPDIR elsewhere): {e.strerror or e}") from None
        return ModelFiles(name, "hf", files)

    def fresh(self) -> "HFTextClassifier":
        return HFTextClassifier(self.start, self.tokenizer, self.folder, self.tune, self.start)

    def fit(self, texts, labels) -> "HFTextClassifier":
        """Fine-tune a copy of the folder's weights on messages labelled 0 ham / 1 spam."""
        t = self.tune
        texts, labels = list(texts), np.asarray(labels)
        target = torch.as_tensor(np.where(labels == 1, self.spam, 1 - self.spam), dtype=torch.int64)
        torch.manual_seed(t.seed)
        rng = np.random.default_rng(t.seed)
        model = copy.deepcopy(self.start)
        for p in model.parameters():
            p.requires_grad_(True)
        opt = torch.optim.AdamW(model.parameters(), lr=t.lr)
        model.train()
        for _ in range(t.epochs):
            order = rng.permutation(len(texts))
            for i in range(0, len(order), t.batch_size):
                idx = order[i:i + t.batch_size]
                loss = model(**self.encode([texts[j] for j in idx]), labels=target[idx]).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.model = model.eval()
        return self


class HFCausalLM(_Base):
    """A `*ForCausalLM` model (e.g. GPT2LMHeadModel) as the language-model threats can query it: per-token
    log-likelihoods of texts under the model (each token predicted from the ones before it; the first from
    nothing when the tokenizer adds no start token, so it is left out), their mean per sequence (the signal
    of sequence-level membership inference, threats/membership/lm_membership.py), and the log-probability
    of continuations after a prefix (a Secret Sharer canary's log-perplexity, Carlini et al. 2019)."""

    def probe(self) -> None:
        lp = self.token_log_probs(["a test sentence", "another one, a little longer than the first"])
        if not all(len(t) and torch.isfinite(t).all() for t in lp):
            raise UserError(f"{self.folder.path}: the model returns no or non-finite log-probabilities")

    @torch.no_grad()
    def token_log_probs(self, texts) -> list[torch.Tensor]:
        """For each text, log P(token_i | tokens before it) for its tokens after the first (float64)."""
        texts = list(texts)
        out: list[torch.Tensor] = [torch.zeros(0, dtype=torch.float64)] * len(texts)
        self.model.eval()
        for idx, enc in self.batches(texts):
            logits = self.model(**enc).logits.double()
            lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, enc["input_ids"][:, 1:, None])[..., 0]
            mask = enc["attention_mask"][:, 1:].bool() & enc["attention_mask"][:, :-1].bool()
            for row, j in enumerate(idx):
                out[j] = lp[row][mask[row]]
        return out

    def sequence_log_likelihood(self, texts) -> np.ndarray:
        """Mean per-token log-likelihood of each text (log of its geometric-mean token probability)."""
        return np.array([float(t.mean()) if len(t) else 0.0 for t in self.token_log_probs(texts)])

    def continuation_log_prob(self, prefix: str, continuations: list[str]) -> np.ndarray:
        """log P(continuation | prefix), summed over the continuation's tokens (prefix tokenised alone first:
        its tokens are the ones the continuation is scored after)."""
        n = len(self.tokenizer(prefix, truncation=True, max_length=self.max_length)["input_ids"])
        whole = self.token_log_probs([prefix + c for c in continuations])
        return np.array([float(t[n - 1:].sum()) for t in whole])


def hf_target(path: str | Path, data: Dataset, trust: frozenset[str] = frozenset()) -> Target:
    """A Hugging Face folder as the audit's target: a sequence classifier as a spam filter on labelled
    messages; a causal LM loads, then a one-line error says no threat audits it yet."""
    from ..text.filters import FilterTarget
    from ..text.messages import MODALITY
    loaded = load_folder(path, trust)
    if isinstance(loaded, HFCausalLM):
        raise UserError(f"{path}: {loaded.name} is a causal language model; it loads and runs, but no audit threat "
                        "takes a Hugging Face causal LM yet (mlwarden.io.hf.load_folder gives it to Python)")
    if data.modality != MODALITY:
        raise UserError(f"{path}: a Hugging Face text classifier is audited on labelled messages (--data sms-spam, a "
                        f".tsv of label<TAB>text, or a CSV with a text column); {data.name} is {data.modality} data")
    if (k := loaded.model.config.num_labels) != 2:
        raise UserError(f"{path}: a classifier of {k} classes; the text threats audit spam filters (2 classes, ham "
                        "and spam)")
    target = FilterTarget(loaded, loaded.name, Access.SCORES)
    target.source = loaded.folder.scan.to_dict()
    return target
