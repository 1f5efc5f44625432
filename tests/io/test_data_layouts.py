"""The data layouts practitioners keep (issue 33): a train file and a test file (CSV, Parquet or .npz), a
Parquet table, a label column of their own naming. With two files nothing is split and the report says the
split was given; with one, the report says mlwarden split it and what membership numbers then assume."""
import csv
import json

import numpy as np
import pytest

from mlwarden.core.errors import UserError
from mlwarden.io.datasets import load_data

from ..cli.run import mlwarden


def _tables(tmp_path):
    """breast-cancer as the user keeps it: train and test halves, label column 'y', as CSV and Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_breast_cancer
    bc = load_breast_cancer()
    x, y = bc.data.astype(np.float64), bc.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    halves = {"train": order[:400], "test": order[400:]}
    names = [f"f{i}" for i in range(x.shape[1])]
    for part, idx in halves.items():
        with open(tmp_path / f"{part}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(names + ["y"])
            w.writerows([*row, label] for row, label in zip(x[idx].tolist(), y[idx].tolist()))
        cols = {n: x[idx, i] for i, n in enumerate(names)} | {"y": y[idx]}
        pq.write_table(pa.table(cols), tmp_path / f"{part}.parquet")
    return x, y, halves


def test_two_files_keep_the_users_split_in_csv_and_parquet_alike(tmp_path):
    x, y, halves = _tables(tmp_path)
    got = {}
    for ext in ("csv", "parquet"):
        ds = load_data(str(tmp_path / f"train.{ext}"), label_column="y", test_spec=str(tmp_path / f"test.{ext}"))
        assert ds.split == f"given: train train.{ext}, test test.{ext}"
        assert (len(ds.y_train), len(ds.y_test)) == (400, len(y) - 400)
        assert np.array_equal(ds.y_test.numpy(), y[halves["test"]])   # the rows of the test file, in its order
        got[ext] = ds
    assert np.allclose(got["csv"].x_train.numpy(), got["parquet"].x_train.numpy())
    assert np.allclose(got["csv"].x_test.numpy(), got["parquet"].x_test.numpy())
    one = load_data(str(tmp_path / "train.parquet"), label_column="y")   # one Parquet table: mlwarden splits it
    assert one.split.startswith("split by mlwarden: 25% test, seed 0") and "membership" in one.split
    assert len(one.y_train) + len(one.y_test) == 400


def test_a_pair_that_does_not_match_is_one_line(tmp_path):
    _tables(tmp_path)
    with pytest.raises(UserError, match="different formats"):
        load_data(str(tmp_path / "train.csv"), label_column="y", test_spec=str(tmp_path / "test.parquet"))
    (tmp_path / "narrow.csv").write_text("f0,y\n1,0\n2,1\n3,0\n4,1\n")
    with pytest.raises(UserError, match="shape"):
        load_data(str(tmp_path / "train.csv"), label_column="y", test_spec=str(tmp_path / "narrow.csv"))
    with pytest.raises(UserError, match="no label column 'label'"):
        load_data(str(tmp_path / "train.parquet"), test_spec=str(tmp_path / "test.parquet"))
    with pytest.raises(UserError, match="two CSV, Parquet or .npz"):
        load_data("digits", test_spec=str(tmp_path / "test.csv"))
    np.savez(tmp_path / "both.npz", x_train=np.zeros((4, 2)), y_train=np.arange(4) % 2, x_test=np.zeros((4, 2)),
             y_test=np.arange(4) % 2)
    with pytest.raises(UserError, match="own train/test split"):
        load_data(str(tmp_path / "both.npz"), test_spec=str(tmp_path / "both.npz"))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        load_data(str(tmp_path / "bad.parquet"), label_column="y")


@pytest.mark.slow
def test_audit_from_two_parquet_files_says_the_split_was_given(tmp_path):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x, y, halves = _tables(tmp_path)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x[halves["train"]], y[halves["train"]])
    sio.dump(clf, tmp_path / "clf.skops")
    runs = {}
    for name, data in (("given", ["--data", "train.parquet", "--test-data", "test.parquet"]),
                       ("split", ["--data", "train.csv"])):
        r = mlwarden("audit", "--model", "clf.skops", *data, "--label-column", "y", "--threats",
                     "extract-equation-solving", "--out", name, cwd=tmp_path)
        assert r.returncode in (0, 1), r.stderr[-2000:]
        runs[name] = json.loads((tmp_path / name / "report.json").read_text())
    given, split = (runs[k]["subject"]["data"] for k in ("given", "split"))
    assert given["split"] == "given: train train.parquet, test test.parquet" and given["n_test"] == len(y) - 400
    assert split["split"].startswith("split by mlwarden") and split["n_train"] + split["n_test"] == 400
    md = (tmp_path / "split" / "report.md").read_text()
    assert "train/test: split by mlwarden" in md and "membership numbers assume" in md
    assert runs["given"]["findings"][0]["status"] == "ok", runs["given"]["findings"][0]["headline"]


def test_parquet_bombs_duplicate_columns_and_mismatched_pairs_are_one_line_errors(tmp_path, monkeypatch):
    """A few-KB Parquet file declaring 10^8+ values ran the process out of memory (exit 3); duplicate column
    names gave a multi-line Arrow message; a test file with other or reordered columns was taken silently."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from mlwarden.io import datasets
    a = np.linspace(0, 1, 40)
    y = (a > 0.5).astype(int)
    pq.write_table(pa.table({"a": a, "b": a, "y": y}), tmp_path / "ok.parquet")
    pq.write_table(pa.table({"b": a, "a": a, "y": y}), tmp_path / "swapped.parquet")
    pq.write_table(pa.Table.from_arrays([pa.array(a), pa.array(a), pa.array(y)], names=["a", "a", "y"]),
                   tmp_path / "dup.parquet")
    monkeypatch.setattr(datasets, "PARQUET_MAX_CELLS", 100)   # 40 rows x 3 columns is over it
    with pytest.raises(UserError, match="reads at most 100 values"):
        load_data(str(tmp_path / "ok.parquet"), label_column="y")
    monkeypatch.undo()
    with pytest.raises(UserError, match="appears more than once") as e:
        load_data(str(tmp_path / "dup.parquet"), label_column="y")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="same columns in the same order"):
        load_data(str(tmp_path / "ok.parquet"), label_column="y", test_spec=str(tmp_path / "swapped.parquet"))
