"""The model kinds of the contract suite: each one a tiny real model saved the way its users save it, and the
command-line arguments that audit it (issue 33).

A `Kind` is a row of the README's format table. Its claims (`white_box`, `black_box`, `harden`, `serve`) are
what the suite checks against what the audit measured: a kind that claims white-box access must see at least
one white-box threat finish on it, and one that does not must see every white-box threat skipped with a
reason. Every builder trains its model here, in seconds, from scikit-learn's data sets.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)


@dataclass(frozen=True)
class Kind:
    name: str                          # the README table's row
    modality: str                      # image | tabular | messages | text
    build: Callable[[Path], Built]   # writes the model (and its data) into a folder
    white_box: bool                    # white-box threats finish on it (else they skip with a reason)
    black_box: bool = True             # score/label threats finish on it
    saved_as: str = ""                 # how a user writes the file (the README's second column)
    serve: bool | None = True          # `mlwarden serve` answers inference requests with it (False: it refuses the
                                       # model in one line; None: not a file)
    harden: str | None = None          # a defence `mlwarden harden` applies to it, measured (None: not measured)
    # the audit gets the network's training recipe, so the threats that train fresh models through it run too.
    # They never touch the file, so one kind per data type runs them (the .pt2); the others skip them with
    # the reason, which keeps the suite's time to what depends on the model kind.
    retrains: bool = False


@dataclass(frozen=True)
class Built:
    model: list[str]                   # --model FILE and the flags that read it
    data: list[str]                    # --data ... (and --recipe where the model is a network)
    recipe: list[str] = field(default_factory=list)
    endpoint: bool = False             # audit `mlwarden serve MODEL` through --endpoint, not the file


# -- data: small, real, and written as the user keeps it (.npz with the true split) -----------------------------
def _npz(path: Path, xtr, ytr, xte, yte) -> Path:
    np.savez(path, x_train=np.asarray(xtr, np.float32), y_train=np.asarray(ytr, np.int64),
             x_test=np.asarray(xte, np.float32), y_test=np.asarray(yte, np.int64))
    return path


def wine(folder: Path):
    """Wine (13 features, 3 classes), standardised, 133 train / 45 test: the multiclass tabular subject."""
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split
    x, y = load_wine(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=45, random_state=0, stratify=y)
    return _npz(folder / "wine.npz", xtr, ytr, xte, yte), (xtr, ytr, xte, yte)


def cancer(folder: Path):
    """Breast cancer (30 features, binary), standardised, 200 train / 100 test: the binary tabular subject
    (the threats for binary linear models and line-search extraction apply to it)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    xtr, xte, ytr, yte = train_test_split(x, y, train_size=200, test_size=100, random_state=0, stratify=y)
    return _npz(folder / "cancer.npz", xtr, ytr, xte, yte), (xtr, ytr, xte, yte)


def digits(folder: Path):
    """Digits (1x8x8 images in [0, 1], 10 classes), 300 train / 100 test: the image subject."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, y, train_size=300, test_size=100, random_state=0, stratify=y)
    return _npz(folder / "digits.npz", xtr, ytr, xte, yte), (xtr, ytr, xte, yte)


# -- networks --------------------------------------------------------------------------------------------------
def _fit_network(recipe: str, split, n_classes: int) -> torch.nn.Module:
    from mlwarden.core.recipe import BUILTIN_RECIPES
    xtr, ytr, _, _ = split
    return BUILTIN_RECIPES[recipe].fit(torch.as_tensor(xtr, dtype=torch.float32), torch.as_tensor(ytr),
                                       n_classes, seed=0).eval()


def _export(module, example, path: Path) -> Path:
    """As `torch.export` users save a network: a `.pt2` with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(module, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, str(path))
    return path


def _network_kind(fmt: str, subject: Callable, recipe: str, n_classes: int, factory: str):
    def build(folder: Path) -> Built:
        data, split = subject(folder)
        net = _fit_network(recipe, split, n_classes)
        example = torch.as_tensor(split[2][:2], dtype=torch.float32)
        if fmt == "pt2":
            model = [str(_export(net, example, folder / "model.pt2"))]
        elif fmt == "torchscript":
            path = folder / "model.pt"
            torch.jit.save(torch.jit.trace(net, example), str(path))
            model = [str(path)]
        elif fmt == "state-dict":
            from safetensors.torch import save_file
            path = folder / "model.safetensors"
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
            model = [str(path), "--factory", factory]
        elif fmt == "onnx":
            path = folder / "model.onnx"
            torch.onnx.export(net, (example,), str(path), input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
            model = [str(path)]
        else:
            raise ValueError(fmt)
        return Built(model, ["--data", str(data)], ["--recipe", recipe])
    return build


# -- scikit-learn and boosters -----------------------------------------------------------------------------------
def _skops_logreg(folder: Path) -> Built:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    data, (xtr, ytr, _, _) = cancer(folder)
    sio.dump(LogisticRegression(max_iter=500).fit(xtr, ytr), folder / "logreg.skops")
    return Built([str(folder / "logreg.skops")], ["--data", str(data)])


def _joblib_forest(folder: Path) -> Built:
    import joblib
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    data, (xtr, ytr, _, _) = wine(folder)
    pipe = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0))
    joblib.dump(pipe.fit(xtr, ytr), folder / "forest.joblib")
    return Built([str(folder / "forest.joblib"), "--allow-pickle"], ["--data", str(data)])


def _xgboost(folder: Path) -> Built:
    import xgboost as xgb
    data, (xtr, ytr, _, _) = cancer(folder)
    xgb.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1).fit(xtr, ytr).save_model(folder / "xgb.json")
    return Built([str(folder / "xgb.json")], ["--data", str(data)])


def _lightgbm(folder: Path) -> Built:
    import lightgbm as lgb
    data, (xtr, ytr, _, _) = wine(folder)
    model = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, n_jobs=1, verbose=-1).fit(xtr, ytr)
    model.booster_.save_model(str(folder / "lgb.txt"))
    return Built([str(folder / "lgb.txt")], ["--data", str(data)])


def _catboost(folder: Path) -> Built:
    from catboost import CatBoostClassifier
    data, (xtr, ytr, _, _) = wine(folder)
    model = CatBoostClassifier(iterations=20, depth=3, thread_count=1, verbose=0, allow_writing_files=False)
    model.fit(xtr, ytr).save_model(str(folder / "model.cbm"))
    return Built([str(folder / "model.cbm")], ["--data", str(data)])


ESTIMATORS = [   # scikit-learn and gradient-boosted trees: score targets
    Kind("scikit-learn (.skops)", "tabular", _skops_logreg, white_box=False, saved_as="skops.io.dump",
         harden="knn-label-sanitization"),
    Kind("scikit-learn (joblib)", "tabular", _joblib_forest, white_box=False, saved_as="joblib.dump",
         harden="knn-label-sanitization"),
    Kind("XGBoost (.json)", "tabular", _xgboost, white_box=False, saved_as="XGBClassifier.save_model",
         harden="knn-label-sanitization"),
    Kind("LightGBM (.txt)", "tabular", _lightgbm, white_box=False, saved_as="booster_.save_model",
         harden="knn-label-sanitization"),
    Kind("CatBoost (.cbm)", "tabular", _catboost, white_box=False, saved_as="CatBoostClassifier.save_model",
         harden="knn-label-sanitization"),
]

NETWORKS = [   # a tabular network in each file format, and behind an endpoint
    Kind("PyTorch .pt2", "tabular", _network_kind("pt2", wine, "tabular-mlp", 3, ""), white_box=True,
         saved_as="torch.export.save", harden="knn-label-sanitization", retrains=True),
    Kind("TorchScript", "tabular", _network_kind("torchscript", wine, "tabular-mlp", 3, ""), white_box=True,
         saved_as="torch.jit.save", harden="knn-label-sanitization"),
    Kind("state dict + factory", "tabular",
         _network_kind("state-dict", wine, "tabular-mlp", 3, "mlwarden.core.zoo:tabular_mlp"), white_box=True,
         saved_as="safetensors save_file", harden="knn-label-sanitization"),
    Kind("ONNX", "tabular", _network_kind("onnx", wine, "tabular-mlp", 3, ""), white_box=True,
         saved_as="torch.onnx.export", harden="knn-label-sanitization"),
]

def _arch_resnet18(folder: Path) -> Built:
    """A ResNet-18 state dict as torchvision users save one, audited by name (`--arch`, no factory). Untrained
    (training one here costs minutes): a network that answers one class, which the threats must also survive."""
    from safetensors.torch import save_file

    from mlwarden.io.arch import build
    data, _ = digits(folder)
    torch.manual_seed(0)
    net = build("resnet18", 10, 1)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "resnet18.safetensors"))
    return Built([str(folder / "resnet18.safetensors"), "--arch", "resnet18"], ["--data", str(data)])


def _endpoint(folder: Path) -> Built:
    built = _network_kind("pt2", wine, "tabular-mlp", 3, "")(folder)
    return Built(built.model, built.data, endpoint=True)


def _sms(folder: Path, n_train: int = 600, n_test: int = 300):
    """Labelled messages as users keep them (label<TAB>text), from the SMS Spam Collection in ../shared."""
    from ..conftest import SHARED_SMS
    rows = [ln.split("\t", 1) for ln in Path(SHARED_SMS).read_text(encoding="utf-8").splitlines() if ln.strip()]
    order = np.random.default_rng(0).permutation(len(rows))
    pick = [rows[i] for i in order[:n_train + n_test]]
    path = folder / "mail.tsv"
    path.write_text("".join(f"{label}\t{text}\n" for label, text in pick), encoding="utf-8")
    return path, pick


def _skops_text(folder: Path) -> Built:
    import skops.io as sio
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline
    data, pick = _sms(folder)
    pipe = make_pipeline(CountVectorizer(), MultinomialNB()).fit([t for _, t in pick], [lb == "spam" for lb, _ in pick])
    sio.dump(pipe, folder / "filter.skops")
    return Built([str(folder / "filter.skops")], ["--data", str(data)])


def _hf_bert(folder: Path) -> Built:
    from ..io.test_hf_models import build_tiny_bert
    data, pick = _sms(folder)
    build_tiny_bert(folder / "tiny-bert", [t for _, t in pick], np.array([int(lb == "spam") for lb, _ in pick]))
    return Built([str(folder / "tiny-bert")], ["--data", str(data)])


NETWORKS.append(Kind("HTTP endpoint (OIP v2)", "tabular", _endpoint, white_box=False,
                    saved_as="`mlwarden serve`, KServe, Triton, MLServer", serve=None))

IMAGE = [
    Kind("PyTorch .pt2", "image", _network_kind("pt2", digits, "cnn", 10, ""), white_box=True,
         saved_as="torch.export.save", harden="feature-squeezing", retrains=True),
    Kind("TorchScript", "image", _network_kind("torchscript", digits, "cnn", 10, ""), white_box=True,
         saved_as="torch.jit.save", harden="knn-label-sanitization"),
    Kind("ONNX", "image", _network_kind("onnx", digits, "cnn", 10, ""), white_box=True,
         saved_as="torch.onnx.export", harden="feature-squeezing"),
    Kind("state dict + --arch", "image", _arch_resnet18, white_box=True, saved_as="torchvision resnet18 state_dict",
         harden="feature-squeezing"),
]

TEXT = [
    Kind("scikit-learn text pipeline (.skops)", "messages", _skops_text, white_box=False, saved_as="skops.io.dump",
         serve=False, harden="roni"),
    Kind("Hugging Face folder", "messages", _hf_bert, white_box=False, saved_as="save_pretrained", serve=False,
         harden="roni"),
]


KINDS = ESTIMATORS + NETWORKS + IMAGE + TEXT


def readme_table() -> str:
    """The README's format table, one row per kind and modality, every cell a claim the contract suite checks."""
    def mark(ok: bool) -> str:
        return "yes" if ok else "no (skipped, with the reason)"
    rows = ["| model | saved with | data | white-box threats | black-box threats | harden | serve |",
            "|---|---|---|---|---|---|---|"]
    for k in KINDS:
        saved = k.saved_as if "`" in k.saved_as else f"`{k.saved_as}`"
        serve = {True: "yes", False: "no (refused in one line: raw text)", None: "n/a"}[k.serve]
        harden = (f"yes (`--defense {k.harden}`)" if k.harden else
                  "n/a (harden takes a model file)" if k.serve is None else "not measured")
        rows.append(f"| {k.name} | {saved} | {k.modality} | {mark(k.white_box)} | {mark(k.black_box)} | {harden} | "
                    f"{serve} |")
    return "\n".join(rows)
