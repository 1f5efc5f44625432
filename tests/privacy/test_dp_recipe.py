"""The DP-SGD recipe: Opacus-incompatible layers are replaced or reported, delta is checked, and the
trained network comes back without Opacus's hooks."""
import pytest
import torch
from torch import nn

from mlwarden.core.errors import UserError
from mlwarden.core.recipe import Recipe
from mlwarden.defenses.dp_sgd import dp_recipe


def bn_net(input_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, n_classes))


class Unsupported(nn.Module):
    """nn.Bilinear has no per-sample gradient rule in Opacus."""

    def __init__(self):
        super().__init__()
        self.bil = nn.Bilinear(64, 64, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.bil(x, x)


def test_batchnorm_is_replaced_and_listed(digits):
    rec, notes = dp_recipe(Recipe("bn", bn_net, epochs=2), (1, 8, 8), 10, len(digits.x_train), epsilon=4)
    assert notes["fixed_layers"] and "BatchNorm" in notes["fixed_layers"][0]
    model = rec.fit(digits.x_train, digits.y_train, 10, seed=0)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not hasattr(model, "_module") and not any(m._forward_hooks for m in model.modules())
    with torch.no_grad():
        assert model(digits.x_test[:5]).shape == (5, 10)
    assert rec.wrap.spent() == pytest.approx(4, abs=0.1)


def test_unfixable_layer_and_bad_delta_are_user_errors(digits):
    with pytest.raises(UserError, match="delta"):
        dp_recipe(Recipe("bn", bn_net), (1, 8, 8), 10, len(digits.x_train), epsilon=4, delta=0.5)
    with pytest.raises(UserError, match="cannot be trained with DP-SGD"):
        dp_recipe(Recipe("bil", lambda s, n: Unsupported()), (1, 8, 8), 10, len(digits.x_train), epsilon=4)
