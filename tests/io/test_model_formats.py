"""Every supported model format loads into a target that agrees with the original model."""
import numpy as np
import pytest
import torch

from mlwarden.core.errors import UserError
from mlwarden.core.target import Access
from mlwarden.io.models import load_target, probe


def agree(target, model_fn, x):
    with torch.no_grad():
        return float((target.labels(x) == model_fn(x)).float().mean())


def test_torch_export_archive(tmp_path, digits, digits_mlp):
    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(digits_mlp, (digits.x_test[:4],), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, tmp_path / "m.pt2")
    t = load_target(str(tmp_path / "m.pt2"), digits)
    probe(t, digits)
    assert t.access is Access.WHITE_BOX
    assert agree(t, lambda x: digits_mlp(x).argmax(1), digits.x_test) == 1.0


def test_state_dict_with_factory_and_access_override(mlp_state_dict, digits, digits_mlp):
    t = load_target(str(mlp_state_dict), digits, factory="mlwarden.core.zoo:mlp", access="labels")
    assert t.access is Access.LABELS
    assert agree(t, lambda x: digits_mlp(x).argmax(1), digits.x_test) == 1.0
    with pytest.raises(PermissionError):
        t.scores(digits.x_test[:2])


def test_skops_sklearn_model(tmp_path, digits):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(max_iter=500).fit(digits.x_train.flatten(1).numpy(), digits.y_train.numpy())
    sio.dump(clf, tmp_path / "lr.skops")
    t = load_target(str(tmp_path / "lr.skops"), digits)
    probe(t, digits)
    assert t.access is Access.SCORES
    p = t.scores(digits.x_test[:5])
    assert np.allclose(p.numpy(), clf.predict_proba(digits.x_test[:5].flatten(1).numpy()), atol=1e-6)
    assert t.queries == 5


def test_onnx_model(digits, digits_onnx):
    path, clf = digits_onnx
    t = load_target(str(path), digits)
    probe(t, digits)
    want = clf.predict(digits.x_test.flatten(1).numpy())
    assert (t.labels(digits.x_test).numpy() == want).mean() == 1.0
    assert torch.allclose(t.scores(digits.x_test[:3]).sum(1), torch.ones(3), atol=1e-5)


def test_onnx_external_data_is_read_from_the_models_folder_never_the_working_directory(tmp_path, digits, digits_onnx,
                                                                                       monkeypatch):
    """onnxruntime resolves a model's external-data files against the working directory when the model is
    given as bytes: a hostile model naming `.env` would read the user's file. Such a model opens from its
    path, so its data comes from its own folder (which the scan checked), whatever the working directory."""
    import onnx
    from onnx import numpy_helper
    path, clf = digits_onnx
    folder, cwd = tmp_path / "model", tmp_path / "cwd"
    folder.mkdir()
    cwd.mkdir()
    model = onnx.load(str(path))
    for init in model.graph.initializer:   # raw bytes: the form external data is written from
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init), init.name))
    onnx.save_model(model, str(folder / "lr.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    weights = (folder / "weights.bin").read_bytes()
    decoy = np.frombuffer(weights, dtype=np.float32).copy()
    (cwd / "weights.bin").write_bytes((-decoy).tobytes())   # same size, other numbers
    monkeypatch.chdir(cwd)
    t = load_target(str(folder / "lr.onnx"), digits)
    want = clf.predict(digits.x_test.flatten(1).numpy())
    assert (t.labels(digits.x_test).numpy() == want).mean() == 1.0


def test_pickle_needs_flag_and_warns(tmp_path, digits, digits_mlp):
    """A pickled module of the user's own class loads only with --allow-pickle and --trust naming the class."""
    from mlwarden.io.scan import UnsafeModelFile
    torch.save(digits_mlp, tmp_path / "full.pt")
    with pytest.raises(UnsafeModelFile, match="--trust mlwarden.core.zoo.MLP"):
        load_target(str(tmp_path / "full.pt"), digits)
    with pytest.raises(UserError, match="--allow-pickle"):
        load_target(str(tmp_path / "full.pt"), digits, fmt="pickle", trust=["mlwarden.core.zoo.MLP"])
    with pytest.warns(UserWarning, match="unpickling"):
        t = load_target(str(tmp_path / "full.pt"), digits, fmt="pickle", allow_pickle=True,
                        trust=["mlwarden.core.zoo.MLP"])
    assert agree(t, lambda x: digits_mlp(x).argmax(1), digits.x_test) == 1.0
    assert t.source["safe"] and "mlwarden.core.zoo.MLP" in [r["name"] for r in t.source["references"]
                                                            if r["verdict"] == "trusted-by-user"]


def test_pickled_torch_layers_load_with_the_flag_alone(tmp_path, digits, digits_mlp):
    """nn.Sequential of torch layers holds only trusted types: --allow-pickle suffices, no --trust."""
    seq = digits_mlp.net
    torch.save(seq, tmp_path / "seq.pt")
    with pytest.warns(UserWarning, match="unpickling"):
        t = load_target(str(tmp_path / "seq.pt"), digits, fmt="pickle", allow_pickle=True)
    with torch.no_grad():
        assert (t.labels(digits.x_test) == seq(digits.x_test).argmax(1)).all()


def test_weights_only_refuses_a_pickled_module_as_state_dict(tmp_path, digits, digits_mlp):
    torch.save(digits_mlp, tmp_path / "full.pt")
    with pytest.raises(UserError, match="--trust mlwarden.core.zoo.MLP"):
        load_target(str(tmp_path / "full.pt"), digits, factory="mlwarden.core.zoo:mlp")
    with pytest.raises(UserError, match="allow-pickle"):   # trusted, yet still not a state_dict
        load_target(str(tmp_path / "full.pt"), digits, factory="mlwarden.core.zoo:mlp",
                    trust=["mlwarden.core.zoo.MLP"])


def test_saved_model_names_keep_their_dots(tmp_path, digits, digits_mlp):
    """`model-epsilon=1` and `model-epsilon=1.5` are two files, not one overwritten."""
    from mlwarden.io.models import save_module
    a = save_module(digits_mlp, digits, tmp_path / "model-epsilon=1")
    b = save_module(digits_mlp, digits, tmp_path / "model-epsilon=1.5")
    assert a["path"].endswith("model-epsilon=1.pt2") and b["path"].endswith("model-epsilon=1.5.pt2")
    assert a["format"] == b["format"] == "export"


def test_a_factory_next_to_the_users_code_is_found(tmp_path):
    """`--factory mynets:SmallNet` run from the folder holding mynets.py (no PYTHONPATH), and the file form
    `--factory path/to/mynets.py:SmallNet`, as a user keeps a model definition beside their training code."""
    import torch

    from ..cli.run import mlwarden
    (tmp_path / "mynets.py").write_text(
        "import torch\n\ndef SmallNet(input_shape, n_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, n_classes))\n")
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict(), tmp_path / "net.pt")
    by_module = mlwarden("audit", "--model", "net.pt", "--factory", "mynets:SmallNet", "--data", "digits",
                         "--threats", "unsafe-model-file", "--out", "a", cwd=tmp_path)
    assert by_module.returncode == 0, by_module.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_path = mlwarden("audit", "--model", tmp_path / "net.pt", "--factory", f"{tmp_path / 'mynets.py'}:SmallNet",
                       "--data", "digits", "--threats", "unsafe-model-file", "--out", "b", cwd=elsewhere)
    assert by_path.returncode == 0, by_path.stderr
    missing = mlwarden("audit", "--model", tmp_path / "net.pt", "--factory", "mynets:SmallNet", "--data", "digits",
                       "--out", "c", cwd=elsewhere)
    assert missing.returncode == 2 and "cannot import module 'mynets'" in missing.stderr
