"""`--model w.safetensors --arch resnet18`: a network by name for a state dict, no factory (io/arch.py).

torchvision is not installable beside this project's pinned torch, so key compatibility is checked against
torchvision's resnet18 state dict written out below from the architecture (He et al. 2016, Table 1, as
torchvision names it), not against torchvision itself."""
import json
import pickle
import zipfile

import pytest
import torch

from mlwarden.core.errors import UserError
from mlwarden.io.arch import ArchFactory, arch_recipe, build, load_arch
from mlwarden.io.models import load_target, probe

from ..cli.run import mlwarden

torch.set_num_threads(1)


def _bn(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.{p}", (c,)) for p in ("weight", "bias", "running_mean", "running_var")] + \
        [(f"{prefix}.num_batches_tracked", ())]


def torchvision_resnet18_keys() -> list[tuple[str, tuple[int, ...]]]:
    """torchvision.models.resnet18(num_classes=1000).state_dict(): names and shapes, in order."""
    keys = [("conv1.weight", (64, 3, 7, 7)), *_bn("bn1", 64)]
    inplanes = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            cin = inplanes if block == 0 else planes
            keys += [(f"{p}.conv1.weight", (planes, cin, 3, 3)), *_bn(f"{p}.bn1", planes),
                     (f"{p}.conv2.weight", (planes, planes, 3, 3)), *_bn(f"{p}.bn2", planes)]
            if block == 0 and stage > 1:   # stride 2 and wider: a projection shortcut
                keys += [(f"{p}.downsample.0.weight", (planes, inplanes, 1, 1)), *_bn(f"{p}.downsample.1", planes)]
        inplanes = planes
    return keys + [("fc.weight", (1000, 512)), ("fc.bias", (1000,))]


def test_resnet18_has_torchvisions_state_dict_names_and_shapes():
    want = torchvision_resnet18_keys()
    assert len(want) == 122
    got = [(k, tuple(v.shape)) for k, v in build("resnet18", 1000, 3).state_dict().items()]
    assert got == want
    assert sum(p.numel() for p in build("resnet18", 1000, 3).parameters()) == 11_689_512   # torchvision's count


def test_timm_prefix_reads_the_same_resnet_names():
    assert list(build("timm/resnet50", 10, 1).state_dict()) == list(build("resnet50", 10, 1).state_dict())


@pytest.fixture(scope="module")
def digits_resnet(tmp_path_factory):
    """A resnet18 (our definition) trained one epoch (84 steps of 16) on digits, saved as safetensors:
    (folder, model, data)."""
    from safetensors.torch import save_file

    from mlwarden.io.datasets import load_builtin
    data = load_builtin("digits", seed=0)
    recipe = arch_recipe("resnet18", epochs=1).with_(batch_size=16)
    model = recipe.fit(data.x_train, data.y_train, data.n_classes, seed=0)
    d = tmp_path_factory.mktemp("arch")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, d / "w.safetensors")
    return d, model.eval(), data


def test_trained_resnet18_beats_chance_and_loads_back_by_name(digits_resnet):
    from mlwarden.core.stats import clopper_pearson
    d, model, data = digits_resnet
    with torch.no_grad():
        right = int((model(data.x_test).argmax(1) == data.y_test).sum())
    assert clopper_pearson(right, len(data.y_test))[0] > 0.1   # 10 balanced classes: chance is 0.1
    t = load_target(str(d / "w.safetensors"), data, arch="resnet18")
    probe(t, data)
    assert torch.equal(t.labels(data.x_test), model(data.x_test).argmax(1))


def test_checkpoint_with_dataparallel_prefix_loads(digits_resnet):
    d, model, data = digits_resnet
    torch.save({"epoch": 1, "model": {f"module.{k}": v for k, v in model.state_dict().items()}}, d / "ckpt.pt")
    t = load_target(str(d / "ckpt.pt"), data, arch="resnet18")
    assert torch.equal(t.labels(data.x_test[:50]), model(data.x_test[:50]).argmax(1))


def test_wrong_architecture_names_the_first_missing_and_unexpected_keys(digits_resnet):
    d, model, data = digits_resnet
    with pytest.raises(UserError, match=r"do not fit --arch resnet50: missing layer1\.0\.conv3\.weight"):
        load_arch(d / "w.safetensors", "resnet50", data)
    with pytest.raises(UserError, match=r"missing features\.0\.0\.weight.*; unexpected (bn1|conv1|fc|layer)"):
        load_arch(d / "w.safetensors", "mobilenet_v2", data)
    with pytest.raises(UserError, match=r"resnet34: missing layer1\.2\.conv1\.weight"):   # the same names, more blocks
        load_arch(d / "w.safetensors", "resnet34", data)
    sd = dict(model.state_dict(), **{"layer2.0.conv1.weight": torch.zeros(128, 64, 1, 1)})
    torch.save(sd, d / "reshaped.pt")
    want = r"shape of layer2\.0\.conv1\.weight \[128, 64, 1, 1\] \(want \[128, 64, 3, 3\]\)"
    with pytest.raises(UserError, match=want):
        load_arch(d / "reshaped.pt", "resnet18", data)


def test_channels_and_classes_are_checked_against_the_data(digits_resnet, tmp_path):
    from safetensors.torch import save_file
    _, _, data = digits_resnet
    save_file(build("resnet18", 10, 3).state_dict(), tmp_path / "rgb.safetensors")
    with pytest.raises(UserError, match=r"3 input channels \(conv1\.weight"):
        load_arch(tmp_path / "rgb.safetensors", "resnet18", data)
    save_file(build("resnet18", 5, 1).state_dict(), tmp_path / "five.safetensors")
    with pytest.raises(UserError, match=r"5 classes \(fc\.weight \[5, 512\]\).*labels up to 9"):
        load_arch(tmp_path / "five.safetensors", "resnet18", data)


def test_a_head_declaring_millions_of_classes_in_no_bytes_is_refused_before_anything_is_built(digits_resnet,
                                                                                              tmp_path, monkeypatch):
    """fc.weight of shape [4194304, 0] holds no bytes; the network for its 4M classes (an 8 GiB head) is only
    built on the meta device, where every shape is compared, and the file refused in one line."""
    from safetensors.torch import save_file
    from mlwarden.io import arch
    _, _, data = digits_resnet
    sd = build("resnet18", 10, 1).state_dict()
    sd["fc.weight"] = torch.empty(1 << 22, 0)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "head.safetensors")
    built, real_build = [], arch.build
    monkeypatch.setattr(arch, "build", lambda *a: built.append((a[1], torch.empty(0).device.type)) or (
        real_build(*a) if a[1] < 1 << 20 or torch.empty(0).is_meta else None))
    with pytest.raises(UserError, match=r"shape of fc\.weight \[4194304, 0\] \(want \[4194304, 512\]\)"):
        load_arch(tmp_path / "head.safetensors", "resnet18", data)
    assert (1 << 22, "meta") in built and all(device == "meta" for k, device in built if k >= 1 << 20), built


class _Payload:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def _evil_pt(folder):
    path = folder / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(64, 1, 7, 7), "x": _Payload()}, path)
    with zipfile.ZipFile(path) as z:   # the payload is really in the file
        assert any(b"system" in z.read(n) for n in z.namelist() if n.endswith("data.pkl"))
    return path


@pytest.mark.parametrize("case", ["unknown-name", "bad-name", "pickle-payload", "pt2-file", "tabular-data",
                                  "not-tensors", "with-factory"])
def test_bad_input_is_one_user_error(digits_resnet, tmp_path, monkeypatch, case):
    from mlwarden.io.datasets import load_builtin
    d, _, data = digits_resnet
    monkeypatch.chdir(tmp_path)
    weights, kw = d / "w.safetensors", {"arch": "resnet18"}
    if case == "unknown-name":
        kw["arch"] = "resnet9000"
    elif case == "bad-name":
        kw["arch"] = "../../etc/passwd"
    elif case == "pickle-payload":
        weights = _evil_pt(tmp_path)
    elif case == "pt2-file":
        torch.save({"a": 1}, tmp_path / "m.pt")   # a torch zip, renamed: the scan's format, not the suffix, counts
        weights = tmp_path / "m.pt2"
        weights.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    elif case == "tabular-data":
        data = load_builtin("breast-cancer", seed=0)
    elif case == "not-tensors":
        weights = tmp_path / "ckpt.pt"
        torch.save({"state_dict": {"conv1.weight": [1, 2, 3]}}, weights)
    elif case == "with-factory":
        kw["factory"] = "mlwarden.core.zoo:mlp"
    with pytest.raises(UserError) as e:
        load_target(str(weights), data, **kw)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400
    assert not (tmp_path / "pwned").exists()


def test_cli_audit_by_arch_runs_white_box_threats(digits_resnet):
    d, _, _ = digits_resnet
    (d / "audit.toml").write_text('[threats.fgsm]\nn_samples = 60\n\n[threats.pgd-linf]\nn_samples = 60\nsteps = 10\n')
    r = mlwarden("audit", "--model", d / "w.safetensors", "--arch", "resnet18", "--data", "digits", "--config",
                 d / "audit.toml", "--threats", "fgsm,pgd-linf", "--out", d / "run", cwd=d)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    rep = json.loads((d / "run" / "report.json").read_text())
    ran = {f["threat"]: f["status"] for f in rep["findings"]}
    assert set(ran) == {"fgsm", "pgd-linf"} and "skipped" not in ran.values() and "failed" not in ran.values()
    assert "--arch resnet18" in (d / "run" / "report.md").read_text()   # the remedy command names the network


@pytest.mark.parametrize("case", ["with-factory", "pickle-payload"])
def test_cli_refuses_in_one_line_with_exit_2(digits_resnet, tmp_path, case):
    d, _, _ = digits_resnet
    weights, flags = d / "w.safetensors", ["--arch", "resnet18"]
    if case == "with-factory":
        flags += ["--factory", "mlwarden.core.zoo:mlp"]
    else:
        weights = _evil_pt(tmp_path)
    r = mlwarden("audit", "--model", weights, *flags, "--data", "digits", "--threats", "fgsm", "--out",
                 tmp_path / "run", cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1, r.stderr
    assert not (tmp_path / "pwned").exists()


def test_arch_list_names_the_builtin_architectures(tmp_path):
    r = mlwarden("audit", "--arch", "list", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert all(n in r.stdout for n in ("resnet18", "resnet50", "mobilenet_v2", "vgg16"))


def test_arch_factory_is_a_picklable_recipe_factory():
    f = pickle.loads(pickle.dumps(ArchFactory("resnet18")))
    assert f((1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(UserError, match="trains an image network"):
        f((64,), 10)


def _fake_library(name, calls):
    """A stand-in for torchvision or timm (neither installs beside this project's torch): it records each call
    and builds 3-channel networks from mlwarden's definitions, as torchvision does."""
    import types

    from mlwarden.io import archnets
    lib = types.ModuleType(name)

    def make(arch, **kw):
        calls.append((arch, kw))
        return getattr(archnets, arch)(num_classes=kw["num_classes"], in_chans=kw.get("in_chans", 3))
    if name == "torchvision":
        lib.models = types.SimpleNamespace(get_model=make, list_models=lambda: ["resnet18", "mobilenet_v2"])
    else:
        lib.create_model, lib.is_model = make, lambda arch: arch == "resnet50"
    return lib


def test_installed_torchvision_builds_the_network_without_weights_and_for_the_datas_channels(monkeypatch):
    import sys
    calls = []
    monkeypatch.setitem(sys.modules, "torchvision", _fake_library("torchvision", calls))
    monkeypatch.setitem(sys.modules, "timm", None)   # import timm fails
    model = build("resnet18", 10, 1)
    assert calls == [("resnet18", {"weights": None, "num_classes": 10})]
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert list(model.state_dict()) == list(build("timm/resnet18", 10, 1).state_dict())
    assert build("mobilenet_v2", 10, 2).features[0][0].in_channels == 2
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(UserError, match="torchvision has no model of that name"):
        build("torchvision/resnet9000", 10, 1)


def test_installed_timm_builds_what_torchvision_does_not_know(monkeypatch):
    import sys
    calls = []
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "timm", _fake_library("timm", calls))
    assert build("resnet50", 7, 1).fc.out_features == 7
    assert calls == [("resnet50", {"pretrained": False, "num_classes": 7, "in_chans": 1})]
    with pytest.raises(UserError, match="timm has no model of that name"):
        build("timm/resnet9000", 10, 1)
    assert build("vgg11", 10, 3).classifier[6].out_features == 10   # timm lacks it: the built-in definition


def arch_model_file(folder):
    """For the contract suite: an untrained resnet18 for digits (1 channel, 10 classes) as safetensors, and the
    CLI arguments that audit it."""
    from safetensors.torch import save_file
    path = folder / "resnet18.safetensors"
    save_file(build("resnet18", 10, 1).state_dict(), path)
    return path, ["--model", str(path), "--arch", "resnet18", "--data", "digits"]
