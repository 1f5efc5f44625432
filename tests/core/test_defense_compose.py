"""Training defences compose into one training run: each rewrites the recipe in turn, the model trains
once, and each keeps its own facts."""
import torch

from mlwarden.audit.runner import Subject
from mlwarden.core.defense import Defense, DefenseContext, apply_defenses
from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import get_defense
from mlwarden.core.target import TorchTarget


class Smoothing(Defense):
    """Label smoothing as a second training defence (sets the recipe's loss hook)."""
    name = "test-smoothing"
    title = "Label smoothing"
    kind = "training"

    def defend_recipe(self, recipe, params, data):
        return recipe.with_(loss=torch.nn.CrossEntropyLoss(label_smoothing=0.1)), {"smoothing": 0.1}


def test_dp_and_a_second_training_defence_train_once_together(digits, digits_mlp, tmp_path):
    fits = []

    def count(x, y):
        fits.append(len(x))
        return x, y

    recipe = BUILTIN_RECIPES["mlp"].with_(data_filter=count)
    subject = Subject(TorchTarget(digits_mlp, 10, digits.input_shape), digits, recipe)
    dp = get_defense("dp-sgd")
    chosen = [(dp, dp.params_for("quick", {"epsilon": 4, "epochs": 5})), (Smoothing(), Smoothing.Params())]
    hardened = apply_defenses(subject, chosen, DefenseContext(digits, tmp_path))
    assert fits == [len(digits.x_train)]                       # one training run for both defences
    assert hardened.recipe.wrap is not None and hardened.recipe.loss is not None
    assert hardened.facts["dp-sgd"]["epsilon_spent"] <= 4.0 + 1e-6 and hardened.facts["test-smoothing"]
    acc = (hardened.target.labels(digits.x_test) == digits.y_test).float().mean()
    assert acc > 0.5                                            # a trained model, not noise
