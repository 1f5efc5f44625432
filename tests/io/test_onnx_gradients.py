"""ONNX models with gradients (issue 33): an exported network's graph is converted to torch through a fixed op
table (io/onnx_torch.py), checked against onnxruntime, and audited white-box; a graph that does not convert
stays black-box and says why; hostile graphs are refused without allocating."""
import json
import pickle
import resource
import warnings
import weakref

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from mlwarden.core.errors import UserError
from mlwarden.core.registry import all_threats
from mlwarden.core.target import Access
from mlwarden.core.threat import Context
from mlwarden.io import onnx_torch
from mlwarden.io.models import OnnxScores, load_target, probe
from mlwarden.io.onnx_ops import TooLarge
from mlwarden.io.onnx_torch import NotConvertible, OnnxScoresTarget, OnnxTorchTarget, convert

from ..cli.run import mlwarden



class BnCNN(nn.Module):
    """conv - batchnorm - relu - maxpool - flatten - linear, for 1x8x8 digits."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(x.view(x.size(0), -1))   # torch.onnx.export writes Shape/Gather/Concat/Reshape for this


@pytest.fixture(scope="module")
def bn_cnn(digits):
    torch.manual_seed(0)
    model = BnCNN()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(15):
        for xb, yb in zip(digits.x_train.split(64), digits.y_train.split(64)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    return model.eval()


def export(model, path, dynamo: bool):
    """torch.onnx.export with a dynamic batch: the TorchScript exporter (dynamo=False, kept BatchNormalization
    nodes) or the torch.export one (dynamo=True, needs onnxscript; weights in an external-data file)."""
    x = torch.zeros(2, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"], output_names=["y"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), optimize=False)
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}}, training=torch.onnx.TrainingMode.PRESERVE)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, digits_mlp, bn_cnn):
    """{(network, exporter): (path, the torch network)}: the MLP ends in Softmax (probabilities), the CNN in logits."""
    d = tmp_path_factory.mktemp("onnx-export")
    mlp = nn.Sequential(digits_mlp, nn.Softmax(-1)).eval()
    return {(name, ex): (export(net, d / f"{name}-{ex}.onnx", ex == "dynamo"), net)
            for name, net in (("mlp", mlp), ("cnn", bn_cnn)) for ex in ("torchscript", "dynamo")}


def input_gradient(module, x, y):
    x = x.clone().requires_grad_(True)
    out = module(x)
    logits = out.log() if torch.allclose(out.sum(1), torch.ones(len(x))) and (out >= 0).all() else out
    nn.functional.cross_entropy(logits, y).backward()
    return x.grad


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("network", ["mlp", "cnn"])
def test_an_exported_network_converts_matches_onnxruntime_and_gives_the_networks_gradients(exported, digits,
                                                                                          network, exporter):
    path, net = exported[(network, exporter)]
    t = load_target(str(path), digits)
    probe(t, digits)
    assert isinstance(t, OnnxTorchTarget) and t.access is Access.WHITE_BOX and t.kind == "onnx", t.describe()
    x, y = digits.x_test, digits.y_test
    ort = torch.from_numpy(OnnxScores(path.read_bytes() if exporter == "torchscript" else str(path), "m")(x.numpy()))
    with torch.no_grad():
        mine = t.module(x)
        want = net(x)
    scores = t.scores(x)   # the probabilities every black-box threat sees: onnxruntime's own
    ort_p = ort if network == "mlp" else ort.softmax(1)
    assert float((scores - ort_p).abs().max()) <= 1e-4
    assert (mine.argmax(1) == want.argmax(1)).all()
    conv = t.describe()["onnx"]
    assert conv["max_abs_diff_vs_onnxruntime"] <= 1e-4 and conv["checked_on"] == 16
    if network == "mlp":   # probabilities out: the module gives log-probabilities, logits up to a constant
        assert conv["outputs"].startswith("log-probabilities") and torch.allclose(mine.exp(), ort, atol=1e-5)
        assert "Softmax" not in conv["ops"]
    else:
        assert torch.allclose(mine, ort, atol=1e-4)
        assert {"Conv", "MaxPool", "Gemm"} <= set(conv["ops"])
    if (network, exporter) == ("cnn", "torchscript"):
        assert {"BatchNormalization", "Shape", "Gather", "Unsqueeze", "Concat", "Reshape"} <= set(conv["ops"])
    g = input_gradient(t.module, x[:64], y[:64])
    assert (g.flatten(1).abs().sum(1) > 0).all()   # every sample gets a gradient
    ref = input_gradient(net, x[:64], y[:64])
    assert torch.allclose(g, ref, atol=1e-5, rtol=1e-3)   # the very gradient of the network that was exported


@pytest.mark.slow   # two audits through the CLI
def test_cli_audits_an_onnx_file_white_box_and_pgd_breaks_it_as_it_breaks_the_torch_network(exported, tmp_path, digits):
    path, net = exported[("cnn", "dynamo")]
    ep = torch.export.export(net, (digits.x_test[:2],), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(ep, str(tmp_path / "cnn.pt2"))
    reports = {}
    for name, model in (("onnx", path), ("pt2", tmp_path / "cnn.pt2")):
        r = mlwarden("audit", "--model", model, "--data", "digits", "--threats", "pgd-linf,fgsm",
                     "--out", tmp_path / name)
        assert r.returncode in (0, 1), r.stderr[-3000:]
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    rep = reports["onnx"]
    assert rep["subject"]["model"]["kind"] == "onnx" and rep["subject"]["model"]["access"] == "white-box"
    assert rep["subject"]["model"]["onnx"]["white_box"] is True
    assert [f["threat"] for f in rep["findings"]] == ["pgd-linf", "fgsm"]
    for f, g in zip(rep["findings"], reports["pt2"]["findings"]):
        assert f["status"] == "ok", (f["threat"], f["headline"])
        m = {x["name"]: x for x in f["metrics"]}
        clean, robust = m["clean_accuracy"], m["robust_accuracy"]
        assert clean["value"] > 0.8
        assert robust["ci_high"] < clean["ci_low"], (f["threat"], clean, robust)   # the attack really worked
        torch_robust = next(x for x in g["metrics"] if x["name"] == "robust_accuracy")
        assert abs(robust["value"] - torch_robust["value"]) <= 0.02   # the same network's numbers, within 4 of 200


# -- graphs built by hand ---------------------------------------------------------------------------------

def mlp_graph(nodes_after, extra_outputs=(), opset=17, extra_opsets=()):
    """x (n, 64) -> MatMul/Add/Relu -> MatMul/Add = 'z' (random weights), then `nodes_after` make 'probs'."""
    rng = np.random.default_rng(0)
    w1 = helper.make_tensor("W1", TensorProto.FLOAT, [64, 16], rng.normal(0, 0.3, (64, 16)).astype(np.float32).ravel())
    w2 = helper.make_tensor("W2", TensorProto.FLOAT, [16, 10], rng.normal(0, 0.3, (16, 10)).astype(np.float32).ravel())
    b = helper.make_tensor("B", TensorProto.FLOAT, [10], np.zeros(10, np.float32))
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Relu", ["h0"], ["h"]),
             helper.make_node("MatMul", ["h", "W2"], ["z0"]), helper.make_node("Add", ["z0", "B"], ["z"]),
             *nodes_after]
    outputs = [*extra_outputs, helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 10])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              outputs, [w1, w2, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])


def save(model, path):
    import onnx
    onnx.save(model, str(path))
    return path


def test_a_label_branch_outside_the_table_is_left_out_and_opset_11_softmax_is_read_as_such(tmp_path, digits):
    """skl2onnx-like: a label output through ArgMax and an ai.onnx.ml op beside the probabilities (opset 11:
    Softmax coerces to 2-D at axis 1). Only the probabilities' nodes are converted."""
    nodes = [helper.make_node("Softmax", ["z"], ["probs"]),
             helper.make_node("ArgMax", ["probs"], ["idx"], axis=1, keepdims=0),
             helper.make_node("ArrayFeatureExtractor", ["classes", "idx"], ["label"], domain="ai.onnx.ml")]
    model = mlp_graph(nodes, [helper.make_tensor_value_info("label", TensorProto.INT64, [None])], opset=11,
                      extra_opsets=[helper.make_opsetid("ai.onnx.ml", 1)])
    model.graph.initializer.append(helper.make_tensor("classes", TensorProto.INT64, [10], list(range(10))))
    t = load_target(str(save(model, tmp_path / "skl.onnx")), digits)
    probe(t, digits)
    assert isinstance(t, OnnxTorchTarget), t.describe()
    assert "ArgMax" not in t.describe()["onnx"]["ops"]
    ort = OnnxScores((tmp_path / "skl.onnx").read_bytes(), "m")(digits.x_test.numpy())
    assert np.abs(t.scores(digits.x_test).numpy() - ort).max() <= 1e-5


def test_an_unsupported_op_falls_back_to_black_box_and_the_skipped_threat_says_which(tmp_path, digits):
    model = mlp_graph([helper.make_node("Shrink", ["z"], ["s"], lambd=0.1),
                       helper.make_node("Softmax", ["s"], ["probs"])])
    t = load_target(str(save(model, tmp_path / "shrink.onnx")), digits)
    probe(t, digits)
    assert isinstance(t, OnnxScoresTarget) and t.access is Access.SCORES
    assert "op Shrink" in t.describe()["onnx"]["why"]
    assert t.scores(digits.x_test[:4]).shape == (4, 10)   # still audited through onnxruntime
    back = pickle.loads(pickle.dumps(t))   # and it still travels to a backend's workers (a session of its own)
    assert isinstance(back, OnnxScoresTarget)
    assert torch.equal(back.scores(digits.x_test[:4]), t.scores(digits.x_test[:4]))
    ctx = Context(target=t, data=digits, evidence_dir=tmp_path / "ev")
    why = all_threats()["pgd-linf"].skip_reason(ctx)
    assert why is not None and "black-box only: op Shrink" in why


def test_an_op_from_another_domain_or_a_subgraph_is_not_converted():
    custom = mlp_graph([helper.make_node("FusedSoftmax", ["z"], ["probs"], domain="com.example")],
                       extra_opsets=[helper.make_opsetid("com.example", 1)])
    with pytest.raises(NotConvertible, match="com.example.FusedSoftmax"):
        convert(custom)
    branch = helper.make_graph([helper.make_node("Identity", ["z"], ["o"])], "b", [],
                               [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    iff = mlp_graph([helper.make_node("If", ["c"], ["probs"], then_branch=branch, else_branch=branch)])
    iff.graph.initializer.append(cond)
    with pytest.raises(NotConvertible, match="If"):
        convert(iff)


def broken(case: str):
    """A graph whose Add reads a tensor made by a later node (a cycle) or by no node."""
    if case == "cycle":
        return mlp_graph([helper.make_node("Add", ["z", "loop"], ["a"]), helper.make_node("Relu", ["a"], ["loop"]),
                          helper.make_node("Softmax", ["a"], ["probs"])])
    return mlp_graph([helper.make_node("Add", ["z", "ghost"], ["a"]), helper.make_node("Softmax", ["a"], ["probs"])])


@pytest.mark.parametrize("case", ["cycle", "undefined"])
def test_a_graph_with_a_cycle_or_an_undefined_tensor_is_a_one_line_user_error(tmp_path, digits, case):
    """onnxruntime refuses such a graph, so it is a user error (exit 2), not a black-box fallback; the converter
    names the node and the tensor."""
    model = broken(case)
    with pytest.raises(NotConvertible, match="cycle" if case == "cycle" else "'ghost' that no node makes"):
        convert(model)
    with pytest.raises(UserError) as e:
        load_target(str(save(model, tmp_path / f"{case}.onnx")), digits)
    assert "\n" not in str(e.value) and "not a loadable ONNX model" in str(e.value)


@pytest.mark.slow   # the CLI end to end
def test_the_cli_exits_2_on_a_graph_with_a_cycle(tmp_path):
    path = save(broken("cycle"), tmp_path / "cycle.onnx")
    r = mlwarden("audit", "--model", path, "--data", "digits", "--threats", "fgsm", "--out", tmp_path / "r")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not a loadable ONNX model" in r.stderr, r.stderr


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_huge_reshape_or_pad_is_refused_before_anything_is_allocated(tmp_path, digits):
    x = digits.x_test[:4].flatten(1)
    huge = helper.make_tensor("shape", TensorProto.INT64, [3], [1 << 20, 1 << 20, 1 << 20])
    reshape = mlp_graph([helper.make_node("Reshape", ["z", "shape"], ["r"]),
                         helper.make_node("Softmax", ["r"], ["probs"])])
    reshape.graph.initializer.append(huge)
    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0, 0, 0, 1 << 40])
    pad = mlp_graph([helper.make_node("Pad", ["z", "pads"], ["p"]), helper.make_node("Softmax", ["p"], ["probs"])])
    pad.graph.initializer.append(pads)
    before = peak_rss_mb()
    with pytest.raises(TooLarge, match="Reshape would make a tensor of 1,152,921,504,606,846,976 elements"):
        convert(reshape)(x)
    with pytest.raises(TooLarge, match="Pad would make"):
        convert(pad)(x)
    assert peak_rss_mb() - before < 200
    with pytest.raises(UserError, match="cannot take data"):   # onnxruntime refuses the reshape too: exit 2
        probe(load_target(str(save(reshape, tmp_path / "reshape.onnx")), digits), digits)


def hoard_graph(width: int, relus: int):
    """x (n, 64) padded to (n, width), then `relus` Relus of it, whose mean (times 0) is added to the MLP's logits:
    a few nodes whose intermediates a gradient keeps alive, relus x width values per sample (the probe's graph)."""
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0, 0, 0, width - 64])
    nodes = [helper.make_node("Pad", ["x", "pads"], ["e0"]),
             *[helper.make_node("Relu", [f"e{k}"], [f"e{k + 1}"]) for k in range(relus)],
             helper.make_node("ReduceMean", [f"e{relus}"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["m", "zero"], ["m0"]), helper.make_node("Add", ["z", "m0"], ["probs"])]
    model = mlp_graph(nodes)
    model.graph.initializer.extend([zero, pads])
    return model


def test_a_graph_hoarding_intermediates_falls_back_to_black_box_before_the_node_past_the_budget_runs(
        tmp_path, digits, monkeypatch):
    """16 Relus of a padded input: onnxruntime reuses one buffer, a gradient would keep all 17. Measured on one
    sample, node by node: the conversion stops at the Relu that takes the total past the budget, and no later
    node runs, on one sample or on the batch."""
    width, budget = 1 << 14, 5 * (1 << 14) + 1000   # the Pad and 4 Relus fit; the 5th Relu passes the budget
    monkeypatch.setattr(onnx_torch, "MAX_ACTIVATIONS", budget)
    relu, shapes = onnx_torch.OPS["Relu"], []
    monkeypatch.setitem(onnx_torch.OPS, "Relu", lambda a, k, o: shapes.append(tuple(a[0].shape)) or relu(a, k, o))
    t = load_target(str(save(hoard_graph(width, 16), tmp_path / "hoard.onnx")), digits)
    probe(t, digits)
    assert isinstance(t, OnnxScoresTarget) and t.access is Access.SCORES
    why = t.describe()["onnx"]["why"]
    at = f"by node Relu, {4 + 1 + 5} of {4 + 1 + 16 + 3}"   # after the MLP's 4 nodes and the Pad; of all 24
    assert f"values per sample in its intermediates {at}" in why and f"budget of {budget:,}" in why
    assert shapes == [(1, 16)] + [(1, width)] * 5   # the MLP's, then five of the 16, on one sample; no batch ran
    assert t.scores(digits.x_test[:4]).shape == (4, 10)   # audited through onnxruntime


def test_a_network_within_the_budget_converts_and_frees_what_no_later_node_reads(tmp_path, digits, monkeypatch):
    """The same graph under the budget converts white-box, with the gradients onnxruntime cannot give; without
    gradients each tensor is dropped after its last reader (the padded one and 15 Relus are gone when the last
    Relu runs; with gradients autograd keeps what backward needs)."""
    t = load_target(str(save(hoard_graph(1 << 10, 16), tmp_path / "small.onnx")), digits)
    probe(t, digits)
    assert isinstance(t, OnnxTorchTarget), t.describe()
    module, x = t._module, digits.x_test[:4]
    assert input_gradient(module, x, digits.y_test[:4]).abs().sum() > 0
    made, alive, relu = [], [], onnx_torch.OPS["Relu"]

    def tracked(a, k, o):   # how many of the Relus' earlier outputs are still held when the next one runs
        alive.append(sum(r() is not None for r in made))
        out = relu(a, k, o)
        made.append(weakref.ref(out))
        return out
    monkeypatch.setitem(onnx_torch.OPS, "Relu", tracked)
    with torch.no_grad():
        module(x)
    assert len(alive) == 1 + 16 and max(alive) == 1   # the MLP's Relu and the 16: each holds only what it reads


def test_size_arithmetic_stays_in_int64_as_onnxruntime_computes_it():
    """Sizes computed in the graph are Python ints (io/onnx_shapes.py) and Python ints do not wrap: a Reshape whose
    size passes through 40 squarings of a constant (onnxruntime: int64, milliseconds) made the converter square
    numbers of 1.6 x 2^k bits and never finish. Past int64 (or MAX_DIMS values) the node runs as int64 tensors."""
    import onnxruntime as ort
    from mlwarden.io.onnx_shapes import STATIC, Dims
    chain = [helper.make_node("Mul", [f"c{k}", f"c{k}"], [f"c{k + 1}"]) for k in range(40)]
    model = mlp_graph([helper.make_node("Shape", ["z"], ["s"]), helper.make_node("Gather", ["s", "one"], ["width"]),
                       *chain, helper.make_node("Sub", ["c40", "c40"], ["zero"]),
                       helper.make_node("Add", ["zero", "width"], ["width2"]),
                       helper.make_node("Concat", ["minus1", "width2"], ["shape"], axis=0),
                       helper.make_node("Reshape", ["z", "shape"], ["z2"]),
                       helper.make_node("Softmax", ["z2"], ["probs"])])
    model.graph.initializer.extend([helper.make_tensor(n, TensorProto.INT64, [1], [v])
                                    for n, v in (("c0", 3), ("one", 1), ("minus1", -1))])
    x = np.random.default_rng(1).normal(size=(5, 64)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    module = convert(model)
    with torch.no_grad():
        out = module(torch.from_numpy(x)).exp().numpy()
    assert np.allclose(out, ref, atol=1e-5)
    big = Dims((1 << 40,), (1,))
    assert STATIC["Mul"]([big, big], {}, 17) is None and STATIC["Mul"]([big, Dims((2,), (1,))], {}, 17) is not None
    assert STATIC["Concat"]([Dims(tuple(range(64)), (64,)), Dims((1,), (1,))], {"axis": 0}, 17) is None


def test_an_initializer_declaring_more_elements_than_it_holds_is_refused_unread():
    model = mlp_graph([helper.make_node("Softmax", ["z"], ["probs"])])
    lie = model.graph.initializer[2]
    lie.ClearField("float_data")
    lie.ClearField("dims")
    lie.dims.extend([1 << 40])
    with pytest.raises(NotConvertible, match="initializer 'B' declares 1,099,511,627,776 elements"):
        convert(model)


def test_probabilities_that_do_not_end_in_softmax_become_log_probabilities_with_gradients(tmp_path, digits):
    """tf2onnx-like: Softmax, then an Identity to the output. The module's output is the log of the
    probabilities (logits up to a constant), so white-box attacks get logits, and scores stay onnxruntime's."""
    model = mlp_graph([helper.make_node("Softmax", ["z"], ["p"], axis=1),
                       helper.make_node("Identity", ["p"], ["probs"])])
    path = save(model, tmp_path / "p.onnx")
    t = load_target(str(path), digits)
    probe(t, digits)
    assert isinstance(t, OnnxTorchTarget) and t.describe()["onnx"]["outputs"].startswith("log-probabilities")
    x = digits.x_test[:32]
    ort = torch.from_numpy(OnnxScores(path.read_bytes(), "m")(x.numpy()))
    with torch.no_grad():
        out = t.module(x)
    assert (out <= 0).all() and torch.allclose(out.exp(), ort, atol=1e-5)
    assert float((t.scores(x) - ort).abs().max()) <= 1e-5
    g = input_gradient(t.module, x, digits.y_test[:32])
    assert (g.flatten(1).abs().sum(1) > 0).all()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_converted_network_saves_as_a_pt2_that_loads_back_with_the_same_outputs(exported, digits, tmp_path,
                                                                                   exporter):
    """Sizes computed in the graph (Shape, Gather, Concat -> Reshape) stay Python ints, so torch.export takes
    the converted module with a dynamic batch: `harden` saves an ONNX model's repair as a `.pt2`."""
    from mlwarden.io.models import save_module
    path, _ = exported[("cnn", exporter)]
    t = load_target(str(path), digits)
    saved = save_module(t.module, digits, tmp_path / "cnn")
    assert saved["format"] == "export", saved
    back = load_target(saved["path"], digits)
    with torch.no_grad():
        assert torch.allclose(back.module(digits.x_test), t.module(digits.x_test), atol=1e-5)


@pytest.mark.parametrize("case", ["short", "link-out", "parent"])
def test_external_data_is_read_only_from_the_models_folder_and_only_its_declared_length(tmp_path, case):
    """Behind the scan (which refuses these files first): the converter itself reads an external tensor only
    from a regular file inside the model's folder, and only when the file holds the bytes the dims declare."""
    from onnx import TensorProto as TP
    folder, outside = tmp_path / "model", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (outside / "secret.bin").write_bytes(np.ones(160, np.float32).tobytes())
    model = mlp_graph([helper.make_node("Softmax", ["z"], ["probs"])])
    w2 = model.graph.initializer[1]
    w2.ClearField("float_data")
    w2.data_location = TP.EXTERNAL
    location = {"short": "w.bin", "link-out": "link.bin", "parent": "../outside/secret.bin"}[case]
    for key, value in (("location", location), ("offset", "0"), ("length", str(160 * 4))):
        entry = w2.external_data.add()
        entry.key, entry.value = key, value
    (folder / "w.bin").write_bytes(np.ones(100, np.float32).tobytes())   # 400 of the 640 bytes
    (folder / "link.bin").symlink_to(outside / "secret.bin")
    why = "does not hold" if case == "short" else "not a file in the model's folder"
    with pytest.raises(NotConvertible, match=why):
        convert(model, folder)
