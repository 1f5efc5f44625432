"""Universal patch and EOT on the digits CNN."""
import torch

from mlwarden.threats.tricking.eot import EOT, PhysicalTransform, majority_correct
from mlwarden.threats.tricking.patch import apply_patch, random_corners, train_patch
from mlwarden.threats.tricking.pgd import pgd

from .helpers import points, seeded


def test_apply_patch_places_the_patch():
    x = torch.zeros(2, 1, 8, 8)
    out = apply_patch(x, torch.ones(1, 3, 3), torch.tensor([0, 5]), torch.tensor([1, 4]))
    assert out[0, 0, 0:3, 1:4].eq(1).all() and out[1, 0, 5:8, 4:7].eq(1).all()
    assert out.sum() == 18


def test_patch_reaches_stated_targeted_success(digits, digits_cnn):
    """On 8x8 digits a universal patch needs a large share of the image: a 5x5 patch (39% of the area)
    turns at least 30% of other-class images into class 3 at random placements; random noise of the
    same size does not."""
    seeded()
    patch = train_patch(digits_cnn, digits.x_train, 3, 5, 0.0, 1.0, steps=500)
    x, y = points(digits, 300)
    x = x[y != 3]
    g = torch.Generator().manual_seed(1)
    r, q = random_corners(len(x), 8, 8, 5, g)
    success = float((digits_cnn(apply_patch(x, patch, r, q)).argmax(1) == 3).float().mean())
    noise = float((digits_cnn(apply_patch(x, torch.rand(1, 5, 5, generator=g), r, q)).argmax(1) == 3).float().mean())
    assert success >= 0.3, success
    assert success > noise + 0.15, (success, noise)


def test_eot_examples_survive_transformations_better(digits, digits_mlp):
    x, y = points(digits, 150)
    t = PhysicalTransform(0.0, 1.0, shift=0, brightness=0.2, noise=0.08)
    seeded()
    plain = pgd(digits_mlp, x, y, 0.1, "linf", 0.0, 1.0, steps=30)
    robust = pgd(EOT(digits_mlp, t, 8), x, y, 0.1, "linf", 0.0, 1.0, steps=30)
    plain_ok = majority_correct(digits_mlp, t, plain, y, 16).float().mean()
    eot_ok = majority_correct(digits_mlp, t, robust, y, 16).float().mean()
    assert eot_ok < plain_ok, (float(eot_ok), float(plain_ok))
