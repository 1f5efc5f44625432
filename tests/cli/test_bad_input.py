"""Bad input: a one-line error naming the problem, exit code 2, no traceback, no report written."""
import numpy as np
import pytest

from .run import mlwarden


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits, mlp_state_dict):
    d = tmp_path_factory.mktemp("bad")
    x = digits.x_test.numpy()
    y = digits.y_test.numpy()
    np.savez(d / "good.npz", x=x, y=y)
    np.savez(d / "flat.npz", x=x.reshape(len(x), -1)[:, :50], y=y)
    np.savez(d / "labels.npz", x=x, y=y + 5)
    nan = x.copy()
    nan[3, 0, 2, 2] = np.nan
    np.savez(d / "nan.npz", x=nan, y=y)
    (d / "bad.toml").write_text("[model]\npath = 'x.pt'\n[audit\nprofile='quick'\n")
    (d / "unknown.toml").write_text("[audit]\nprofile = 'quick'\nspeed = 3\n")
    (d / "badvalue.toml").write_text("[audit]\nprofile = 'fastest'\n")
    (d / "model.xyz").write_text("not a model")
    (d / "model.pkl").write_bytes(b"\x80\x04K\x01.")
    import torch
    from mlwarden.io.datasets import load_builtin
    model = torch.load(mlp_state_dict, weights_only=True)
    from mlwarden.core.zoo import mlp
    net = mlp((1, 8, 8), 10)
    net.load_state_dict(model)
    torch.jit.save(torch.jit.trace(net.eval(), load_builtin("digits").x_test[:2]), d / "mlp.ts")
    return d, mlp_state_dict


CASES = {
    "missing model file": (["--model", "{d}/nope.pt2", "--data", "digits"], "model file not found"),
    "missing data file": (["--model", "{sd}", "--factory", "mlwarden.core.zoo:mlp", "--data", "{d}/nope.npz"],
                          "data file not found"),
    "unknown model format": (["--model", "{d}/model.xyz", "--data", "digits"], "unknown model format"),
    "pickle refused": (["--model", "{d}/model.pkl", "--data", "digits"], "refusing to unpickle"),
    "shape mismatch": (["--model", "{sd}", "--factory", "mlwarden.core.zoo:cnn", "--data", "{d}/flat.npz"],
                       "cannot build a network for input shape [50]"),
    "weights mismatch": (["--model", "{sd}", "--factory", "mlwarden.core.zoo:cnn", "--data", "digits"],
                         "weights do not fit"),
    "data shape mismatch": (["--model", "{sd}", "--factory", "mlwarden.core.zoo:mlp", "--data", "{d}/flat.npz",
                             "--input-shape", "1,8,8"], "input_shape [1, 8, 8] needs 64"),
    "labels out of range": (["--model", "{d}/mlp.ts", "--data", "{d}/labels.npz"],
                            "labels out of range"),
    "NaN in data": (["--model", "{sd}", "--factory", "mlwarden.core.zoo:mlp", "--data", "{d}/nan.npz"],
                    "NaN or infinite values in 1 rows"),
    "malformed TOML": (["--config", "{d}/bad.toml"], "malformed TOML"),
    "unknown config key": (["--config", "{d}/unknown.toml"], "audit.speed: unknown key"),
    "bad config value": (["--config", "{d}/badvalue.toml"], "audit.profile"),
    "unknown threat": (["--threats", "no-such-attack"], "unknown threat 'no-such-attack'"),
    "bad fail-on": (["--model", "{sd}", "--factory", "mlwarden.core.zoo:mlp", "--data", "digits",
                     "--fail-on", "sometimes"], "audit.fail_on"),
    "bad factory": (["--model", "{sd}", "--factory", "nosuchmod:make", "--data", "digits"],
                    "cannot import module 'nosuchmod'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2(files, tmp_path, case):
    d, sd = files
    args, expected = CASES[case]
    args = [a.format(d=d, sd=sd) for a in args]
    out = tmp_path / "run"
    r = mlwarden("audit", *args, "--out", out)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert not (out / "report.json").exists() and not (out / "report.html").exists()


def test_report_of_missing_dir_is_exit_2(tmp_path):
    r = mlwarden("report", tmp_path / "nothing")
    assert r.returncode == 2 and r.stderr.startswith("error: no report.json")
