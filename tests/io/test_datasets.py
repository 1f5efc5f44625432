import numpy as np
import pytest

from mlwarden.core.errors import UserError
from mlwarden.io.datasets import load_data
from mlwarden.io.idx import read_idx


def test_csv_with_label_column_and_shape(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 4)).round(3)
    y = (x[:, 0] > 0.5).astype(int)
    rows = ["a,b,target,c,d"] + [f"{r[0]},{r[1]},{t},{r[2]},{r[3]}" for r, t in zip(x, y)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    d = load_data(str(tmp_path / "d.csv"), label_column="target", input_shape=[1, 2, 2])
    assert d.input_shape == (1, 2, 2) and d.n_classes == 2 and len(d.y_train) + len(d.y_test) == 40
    with pytest.raises(UserError, match="no label column 'label'"):
        load_data(str(tmp_path / "d.csv"))


def test_npz_with_explicit_split_and_declared_range(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (30, 1, 4, 4)).astype(np.uint8)
    y = np.arange(30) % 3
    np.savez(tmp_path / "s.npz", x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:])
    d = load_data(str(tmp_path / "s.npz"), input_range=(0, 255))
    assert d.space.declared and d.space.width == 255 and len(d.x_test) == 10


def test_shared_mnist_idx_reader():
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist-t10k"
    imgs = read_idx(root / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(root / "t10k-labels-idx1-ubyte.gz")
    assert imgs.shape == (10000, 28, 28) and labels.shape == (10000,) and labels.max() == 9


def test_sms_spam_reads_as_labelled_messages(sms_spam):
    from mlwarden.text.messages import decode
    assert sms_spam.modality == "messages" and sms_spam.n_classes == 2
    assert len(sms_spam.x_train) + len(sms_spam.x_test) == 5574
    assert int(sms_spam.y_train.sum() + sms_spam.y_test.sum()) == 747          # spam, as the collection ships
    assert abs(len(sms_spam.x_test) / 5574 - 0.3) < 0.001
    assert abs(float(sms_spam.y_test.float().mean()) - 747 / 5574) < 0.002     # stratified
    assert any("£" in t for t in decode(sms_spam.x_train))                     # UTF-8 survives


def test_a_csv_with_a_text_column_holds_messages(tmp_path):
    from mlwarden.io.datasets import load_data
    from mlwarden.text.messages import MAX_MESSAGE_BYTES, decode
    rows = [(i % 2, f'"message, number {i}"') for i in range(40)] + [(0, "x" * (MAX_MESSAGE_BYTES + 50))]
    (tmp_path / "m.csv").write_text("label,text\n" + "".join(f"{y},{t}\n" for y, t in rows), encoding="utf-8")
    d = load_data(str(tmp_path / "m.csv"), test_fraction=0.25)
    texts = decode(d.x_train) + decode(d.x_test)
    assert d.modality == "messages" and len(texts) == 41
    assert "message, number 7" in texts
    assert max(len(t) for t in texts) == MAX_MESSAGE_BYTES                    # cut, never an error


def _serve_bytes(blob: bytes):
    import http.server
    import threading

    class One(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)

        def log_message(self, *a):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), One)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/sms+spam+collection.zip"


def _zip(**members) -> bytes:
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_sms_spam_is_downloaded_once_and_checked(tmp_path, monkeypatch):
    """The download path, against a local server holding the archive as UCI ships it."""
    import pytest as _pytest

    from mlwarden.core.errors import UserError
    from mlwarden.io import messages
    from ..conftest import SHARED_SMS
    real = open(SHARED_SMS, "rb").read()
    monkeypatch.setenv("MLWARDEN_CACHE", str(tmp_path / "cache"))
    server, url = _serve_bytes(_zip(SMSSpamCollection=real, readme="SMS Spam Collection v.1"))
    try:
        monkeypatch.setattr(messages, "SMS_SPAM_URL", url)
        path = messages.fetch_sms_spam()
        assert path == messages.sms_spam_path() and path.read_bytes() == real
    finally:
        server.shutdown()
    assert messages.fetch_sms_spam() == path          # the second call reads the cache (the server is gone)
    path.unlink()
    server, url = _serve_bytes(_zip(SMSSpamCollection=real[:-100]))   # a changed file: refused, nothing cached
    try:
        monkeypatch.setattr(messages, "SMS_SPAM_URL", url)
        with _pytest.raises(UserError, match="the downloaded file has md5"):
            messages.fetch_sms_spam()
        assert not path.exists()
    finally:
        server.shutdown()


def test_a_tsv_message_may_hold_form_feeds_and_line_separators(tmp_path):
    from mlwarden.io.datasets import load_data
    from mlwarden.text.messages import decode
    lines = [f"{'spam' if i % 3 == 0 else 'ham'}\tmessage {i}" for i in range(20)]
    lines[4] = "ham\tpage one\x0cpage two\u2028third"
    (tmp_path / "m.tsv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    d = load_data(str(tmp_path / "m.tsv"))
    texts = decode(d.x_train) + decode(d.x_test)
    assert len(texts) == 20 and "page one\x0cpage two\u2028third" in texts and "message 3" in texts
