"""Backends: the same seed gives the same reference models and the same membership findings in this
process, in a pool of fresh processes, and on a local Ray; work that cannot travel runs here, counted."""
import os
import threading

import numpy as np
import pytest
import torch

from mlwarden.core.backend import LocalBackend, ProcessBackend, make_backend
from mlwarden.core.errors import UserError
from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import all_threats
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.privacy.reference_models import train_reference_models

RECIPE = BUILTIN_RECIPES["mlp"].with_(epochs=8)


def _refs(digits, backend, cache, monkeypatch):
    monkeypatch.setenv("MLWARDEN_CACHE", str(cache))
    x = torch.cat([digits.x_train, digits.x_test])
    y = torch.cat([digits.y_train, digits.y_test])
    return train_reference_models(RECIPE, x, y, 10, 4, 0, backend)


def _mia(digits, model, backend, cache, monkeypatch, tmp_path):
    monkeypatch.setenv("MLWARDEN_CACHE", str(cache))
    threat = all_threats()["membership-inference"]
    ctx = Context(target=TorchTarget(model, 10, digits.input_shape), data=digits, recipe=RECIPE,
                  evidence_dir=tmp_path / "evidence" / threat.name, backend=backend)
    return threat.run(ctx, threat.params_for("quick", {"n_reference": 4}))


def _same_weights(a, b):
    for ma, mb in zip(a.models, b.models):
        for (ka, ta), (kb, tb) in zip(ma.state_dict().items(), mb.state_dict().items()):
            assert ka == kb and torch.equal(ta, tb), ka


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)   # the workers' thread count: the same arithmetic, bit for bit
    yield
    torch.set_num_threads(old)


@pytest.fixture
def pool():
    backend = ProcessBackend(2)
    yield backend
    backend.close()


def test_process_pool_trains_the_same_reference_models(digits, tmp_path, monkeypatch, one_thread, pool):
    local = _refs(digits, LocalBackend(), tmp_path / "a", monkeypatch)
    remote = _refs(digits, pool, tmp_path / "b", monkeypatch)
    assert local.trained == remote.trained == 4 and pool.ran_locally == 0
    _same_weights(local, remote)
    assert np.array_equal(local.in_mask, remote.in_mask)
    # the caller, not the workers, wrote the cache: a second run trains nothing
    assert _refs(digits, pool, tmp_path / "b", monkeypatch).trained == 0
    # the pool is kept between calls, and new work reaches the same workers
    again = _refs(digits, pool, tmp_path / "c", monkeypatch)
    assert again.trained == 4
    _same_weights(local, again)


def test_the_membership_finding_is_the_same_on_every_backend(digits, tmp_path, monkeypatch, one_thread, pool):
    model = RECIPE.fit(digits.x_train, digits.y_train, 10, seed=0)
    a = _mia(digits, model, LocalBackend(), tmp_path / "a", monkeypatch, tmp_path / "ra")
    b = _mia(digits, model, pool, tmp_path / "b", monkeypatch, tmp_path / "rb")
    assert [(m.name, m.value, m.n) for m in a.metrics] == [(m.name, m.value, m.n) for m in b.metrics]
    assert a.headline == b.headline


def test_audit_with_workers_reports_what_the_local_audit_reports(tmp_path, mlp_state_dict):
    """Through the CLI: --workers 2 changes where the reference models train, not one number; the report
    records the backend, and the run's fingerprint ignores it (a --resume may change it)."""
    import json

    from ..cli.run import mlwarden
    (tmp_path / "a.toml").write_text("[threats.membership-inference]\nn_reference = 4\n")
    args = ["audit", "--model", mlp_state_dict, "--factory", "mlwarden.core.zoo:mlp", "--data", "digits",
            "--recipe", "mlp", "--threats", "membership-inference", "--config", tmp_path / "a.toml"]
    runs = {}
    for name, extra in (("local", []), ("process", ["--workers", "2"])):
        r = mlwarden(*args, *extra, "--out", tmp_path / name, env_cache=tmp_path / f"cache-{name}")
        assert r.returncode == 0, r.stderr[-2000:]
        runs[name] = json.loads((tmp_path / name / "report.json").read_text())
    (a,), (b,) = runs["local"]["findings"], runs["process"]["findings"]
    assert a["metrics"] == b["metrics"] and a["headline"] == b["headline"]
    assert runs["process"]["settings"]["workers"] == 2 and runs["local"]["settings"]["device"] == "cpu"


def test_work_that_cannot_travel_runs_here_and_is_counted(pool):
    lock = threading.Lock()   # a lock cannot be pickled

    def holds_lock(i, _shared):
        with lock:
            return i * 2
    assert pool.map(holds_lock, [1, 2, 3]) == [2, 4, 6] and pool.ran_locally == 3


def test_shared_reaches_every_item_and_order_is_kept(pool):
    assert pool.map(_scale, list(range(5)), shared=10) == [0, 10, 20, 30, 40] and pool.ran_locally == 0
    assert pool.map(_scale, list(range(3)), shared=-1) == [0, -1, -2]   # new shared data, the same workers
    assert LocalBackend().map(_scale, [1, 2], shared=3) == [3, 6]


def _scale(i, k):
    return i * k


def test_backend_names():
    assert isinstance(make_backend("local"), LocalBackend) and make_backend("local").workers == 1
    assert make_backend("local", 3).workers == 3 and make_backend("process", 2).name == "process"
    with pytest.raises(UserError, match="expected local, process, ray"):
        make_backend("threads")
    with pytest.raises(UserError, match="at least 1"):
        ProcessBackend(0)


def _visible_gpus(item, shared):
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_ray_gives_the_same_reference_models(digits, tmp_path, monkeypatch, one_thread):
    """A local Ray (the extra `ray`, which CI installs) trains the very same models, and its workers can use
    the GPU that --device names."""
    from mlwarden.core.backend import RayBackend
    ray = RayBackend(None, workers=2)
    try:
        remote = _refs(digits, ray, tmp_path / "r", monkeypatch)
        assert ray.ran_locally == 0 and ray.workers == 2
        # its tasks see the GPUs this process sees (Ray hides them from a task that asks for none: "")
        assert ray.map(_visible_gpus, [0, 1]) == [os.environ.get("CUDA_VISIBLE_DEVICES")] * 2
    finally:
        ray.close()
    local = _refs(digits, LocalBackend(), tmp_path / "l", monkeypatch)
    _same_weights(local, remote)


def test_devices_resolve_and_a_network_on_a_device_keeps_cpu_tensors_outside():
    from mlwarden.core.device import OnDevice, resolve_device
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="expected auto"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU is visible"):
            resolve_device("cuda:0")
    net = torch.nn.Linear(3, 2)
    wrapped = OnDevice(net, resolve_device("auto"))
    x = torch.ones(4, 3, requires_grad=True)
    wrapped(x).sum().backward()
    assert x.grad is not None and x.grad.device.type == "cpu"


def test_threats_of_one_audit_run_side_by_side_with_the_findings_of_a_sequential_run(tmp_path, monkeypatch,
                                                                                       one_thread):
    """--workers 2 runs independent threats in two processes; every finding is the one a sequential run
    writes (each threat seeds itself), and skipped threats are still reported."""
    from mlwarden.audit.runner import Subject, run_audit
    from mlwarden.audit.config import AuditSettings
    from mlwarden.io.datasets import load_builtin
    monkeypatch.setenv("MLWARDEN_CACHE", str(tmp_path / "cache"))
    data = load_builtin("digits", seed=0)
    model = RECIPE.fit(data.x_train, data.y_train, 10, seed=0)
    subject = Subject(TorchTarget(model, 10, data.input_shape, name="mlp"), data, RECIPE)
    threats = ["fgsm", "pgd-linf", "square", "membership-inference", "secret-sharer"]
    reports, notes = {}, []
    for name, workers in (("seq", None), ("par", 2)):
        settings = AuditSettings(workers=workers, threads=1).model_dump()
        reports[name] = run_audit(subject, tmp_path / name, settings=settings, threats=threats,
                                  overrides={"membership-inference": {"n_reference": 4}}, notice=notes.append)
    assert notes == []   # nothing fell back to this process: the threats did run in the workers
    seq, par = reports["seq"].findings, reports["par"].findings
    assert [f.threat for f in seq] == [f.threat for f in par] == threats
    assert par[-1].status.value == "skipped"
    for a, b in zip(seq, par):
        assert [(m.name, m.value, m.n) for m in a.metrics] == [(m.name, m.value, m.n) for m in b.metrics], a.threat
        assert a.headline == b.headline and a.queries == b.queries
        assert [e.split("/")[-1] for e in a.evidence] == [e.split("/")[-1] for e in b.evidence]
    assert (tmp_path / "par" / "findings" / "membership-inference.json").exists()
    assert (tmp_path / "par" / par[3].evidence[0]).exists()


def test_an_onnx_target_travels_to_the_workers_and_gives_the_sequential_findings(digits, digits_onnx, tmp_path,
                                                                                  one_thread):
    """An onnxruntime session cannot be pickled: the target travels as the model's bytes and each worker opens
    its own session. Nothing runs in this process instead, and every finding is the sequential one."""
    from mlwarden.audit.config import AuditSettings
    from mlwarden.audit.runner import Subject, run_audit
    from mlwarden.io.models import load_target
    path, _ = digits_onnx
    threats = ["square", "extract-equation-solving"]
    reports, notes = {}, []
    for name, workers in (("seq", None), ("par", 2)):
        subject = Subject(load_target(str(path), digits), digits, None)
        settings = AuditSettings(workers=workers, threads=1).model_dump()
        reports[name] = run_audit(subject, tmp_path / name, settings=settings, threats=threats,
                                  overrides={"square": {"n_samples": 40, "max_queries": 200}}, notice=notes.append)
    assert notes == []   # with the session in the target, both threats used to fall back to this process
    for a, b in zip(reports["seq"].findings, reports["par"].findings):
        assert a.status.value == "ok", (a.threat, a.headline)
        assert [(m.name, m.value, m.n) for m in a.metrics] == [(m.name, m.value, m.n) for m in b.metrics], a.threat
        assert a.queries == b.queries > 0


def test_a_poison_rate_sweep_on_a_pool_gives_the_sequential_finding(digits, tmp_path, one_thread, pool):
    """The backdoor threat's retraining per (trigger, rate) goes through the backend: the same finding."""
    threat = all_threats()["backdoor"]
    model = RECIPE.fit(digits.x_train, digits.y_train, 10, seed=0)
    params = threat.params_for("quick", {"triggers": ["patch", "blend"], "rates": [0.05, 0.1], "detectors": []})
    out = []
    for name, backend in (("local", LocalBackend()), ("pool", pool)):
        ctx = Context(target=TorchTarget(model, 10, digits.input_shape), data=digits, recipe=RECIPE,
                      evidence_dir=tmp_path / name / "evidence" / threat.name, backend=backend)
        out.append(threat.run(ctx, params))
    a, b = out
    assert a.status.value == "ok" and pool.ran_locally == 0
    assert [(m.name, m.value, m.n) for m in a.metrics] == [(m.name, m.value, m.n) for m in b.metrics]
    assert a.details["table"] == b.details["table"] and len(a.details["table"]) == 4


def test_a_harden_sweep_trains_its_points_side_by_side_with_the_sequential_results(tmp_path, mlp_state_dict):
    """--workers 2 trains the sweep's points (adversarial training at two eps) in two workers, then audits
    them in two workers: the same hardened models, after-audits, checks and accuracies."""
    import json

    from ..cli.run import mlwarden
    args = ["harden", "--defense", "adversarial-training", "--param", "eps=0.05,0.1", "--param", "epochs=4",
            "--model", mlp_state_dict, "--factory", "mlwarden.core.zoo:mlp", "--data", "digits", "--recipe", "mlp",
            "--threats", "fgsm"]
    out = {}
    for name, extra in (("local", []), ("pool", ["--workers", "2"])):
        r = mlwarden(*args, *extra, "--out", tmp_path / name)
        assert r.returncode == 0, r.stderr[-2000:]
        out[name] = json.loads((tmp_path / name / "harden.json").read_text())
        if extra:   # the points went to the workers; none fell back to this process
            assert "applying 2 settings side by side" in r.stderr and "could not travel" not in r.stderr
            assert "auditing 2 hardened models side by side" in r.stderr
    for a, b in zip(out["local"]["points"], out["pool"]["points"]):
        assert a["label"] == b["label"] and a["accuracy"] == b["accuracy"] and a["facts"] == b["facts"]
        assert [c["after"] for c in a["comparison"]] == [c["after"] for c in b["comparison"]]
        assert a["evaluation"].keys() == b["evaluation"].keys() == {"adversarial-training"}   # timings: they differ
    assert len(out["pool"]["points"]) == 2


def test_the_time_budget_stops_a_parallel_run_between_rounds_and_keeps_what_finished(digits, tmp_path, monkeypatch,
                                                                                      pool):
    """Reference models train in rounds of as many as there are workers; the budget is checked before
    each round, and every finished round is already in the cache."""
    from mlwarden.core.errors import TimeBudgetExceeded
    monkeypatch.setenv("MLWARDEN_CACHE", str(tmp_path))
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 1:
            raise TimeBudgetExceeded("over budget")
    x = torch.cat([digits.x_train, digits.x_test])
    y = torch.cat([digits.y_train, digits.y_test])
    with pytest.raises(TimeBudgetExceeded):
        train_reference_models(RECIPE, x, y, 10, 6, 0, pool, check)
    assert len(list(tmp_path.rglob("model-*.pt"))) == 2   # the first round of 2 workers
    assert train_reference_models(RECIPE, x, y, 10, 6, 0, pool).trained == 4
