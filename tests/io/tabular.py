"""Tabular data sets as the CSV files a user gives `--data`, shared by the tree-model tests."""
import csv

import pytest

from mlwarden.io.datasets import load_data


def write_csv(path, x, y):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{i}" for i in range(x.shape[1])] + ["y"])
        w.writerows([*map(float, row), int(label)] for row, label in zip(x, y))
    return load_data(str(path), label_column="y")   # the split the audit makes of this file


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    """scikit-learn's breast cancer data (binary, 30 features) as a CSV and the split the audit makes of it."""
    from sklearn.datasets import load_breast_cancer
    bc = load_breast_cancer()
    path = tmp_path_factory.mktemp("cancer") / "patients.csv"
    return path, write_csv(path, bc.data, bc.target)


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """scikit-learn's wine data (3 classes, 13 features)."""
    from sklearn.datasets import load_wine
    w = load_wine()
    path = tmp_path_factory.mktemp("wine") / "wine.csv"
    return path, write_csv(path, w.data, w.target)
