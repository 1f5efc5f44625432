"""A missing extra is one line naming it, exit 2: `pip install 'mlwarden[dp]'` is what the user reads."""
import subprocess
import sys

import pytest

from mlwarden.core.errors import UserError

BLOCK = "import sys; sys.modules[{mod!r}] = None; sys.argv = ['mlwarden', *{argv!r}]; " \
        "from mlwarden.cli.main import entry; entry()"


@pytest.mark.parametrize("mod,argv,extra", [
    ("opacus", ["harden", "--defense", "dp-sgd", "--recipe", "mlp", "--out", "{tmp}/h"], "dp"),
    ("fastapi", ["serve", "--data", "digits"], "serve"),
    ("httpx", ["audit", "--endpoint", "http://127.0.0.1:9/v2/models/m", "--out", "{tmp}/e"], "serve"),
    ("onnx", ["audit", "--model", "{tmp}/m.onnx", "--data", "digits", "--out", "{tmp}/o"], "onnx"),
    ("ray", ["audit", "--backend", "ray", "--threats", "fgsm", "--out", "{tmp}/r"], "ray"),
])
def test_missing_extra_is_one_line_naming_it(mod, argv, extra, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in argv]
    (tmp_path / "m.onnx").write_bytes(b"not read: the missing extra is named first")
    r = subprocess.run([sys.executable, "-c", BLOCK.format(mod=mod, argv=argv)], capture_output=True, text=True,
                       timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-1500:]
    assert f"pip install 'mlwarden[{extra}]'" in lines[0] and "Traceback" not in r.stderr


def test_require_names_the_extra(monkeypatch):
    from mlwarden.core.extras import require
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"needs the 'onnx' extra .*mlwarden\[onnx\]"):
        require("onnxruntime", "onnx", "loading an ONNX model")
