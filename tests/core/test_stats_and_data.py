import pytest
import torch

from mlwarden.core.data import make_dataset
from mlwarden.core.errors import UserError
from mlwarden.core.stats import clopper_pearson


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and abs(hi - 0.30850) < 1e-4
    lo, hi = clopper_pearson(5, 10)
    assert abs(lo - 0.18709) < 1e-4 and abs(hi - 0.81291) < 1e-4


def test_input_range_declared_inferred_and_checked():
    x = torch.rand(20, 4) * 3
    y = torch.arange(20) % 2
    d = make_dataset("t", x, y, x, y)
    assert not d.space.declared and d.space.high <= 3
    with pytest.raises(UserError, match="outside the declared input range"):
        make_dataset("t", x, y, x, y, input_range=(0, 1))
    with pytest.raises(UserError, match="labels go up to 1 but the model has 1 classes"):
        make_dataset("t", x, y, x, y, n_classes=1)
