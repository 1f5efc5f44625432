"""PGD, APGD and FGSM on real digits models, measured on 200 held-out points."""
import pytest

from mlwarden.threats.tricking.apgd import apgd, checkpoints
from mlwarden.threats.tricking.fgsm import fgsm
from mlwarden.threats.tricking.pgd import pgd

from .helpers import acc, in_ball, points, seeded


@pytest.mark.parametrize("model_name", ["digits_mlp", "digits_cnn"])
def test_pgd_linf_eps_03_breaks_standard_models(request, digits, model_name):
    model = request.getfixturevalue(model_name)
    x, y = points(digits)
    assert acc(model, x, y) > 0.9
    seeded()
    adv = pgd(model, x, y, 0.3, "linf", 0.0, 1.0, steps=40)
    assert in_ball(adv, x, 0.3)
    assert acc(model, adv, y) < 0.05


def test_apgd_never_weaker_than_pgd_on_same_points(digits, digits_mlp, digits_cnn):
    for model in (digits_mlp, digits_cnn):
        x, y = points(digits)
        seeded()
        p = pgd(model, x, y, 0.1, "linf", 0.0, 1.0, steps=50)
        ce = apgd(model, x, y, 0.1, "linf", 0.0, 1.0, steps=50, loss="ce")
        t = apgd(model, x, y, 0.1, "linf", 0.0, 1.0, steps=50, loss="dlr-t", n_targets=3)
        assert in_ball(ce, x, 0.1) and in_ball(t, x, 0.1)
        pgd_ok = (model(p).argmax(1) == y)
        apgd_ok = (model(ce).argmax(1) == y) & (model(t).argmax(1) == y)
        assert pgd_ok.float().mean() > 0.2  # eps small enough that the comparison means something
        assert apgd_ok.sum() <= pgd_ok.sum()


def test_l2_pgd_and_fgsm(digits, digits_mlp):
    x, y = points(digits)
    seeded()
    adv = pgd(digits_mlp, x, y, 2.0, "l2", 0.0, 1.0, steps=40)
    assert in_ball(adv, x, 2.0, "l2")
    assert acc(digits_mlp, adv, y) < 0.1
    one = fgsm(digits_mlp, x, y, 0.1, "linf", 0.0, 1.0)
    many = pgd(digits_mlp, x, y, 0.1, "linf", 0.0, 1.0, steps=40)
    assert acc(digits_mlp, one, y) >= acc(digits_mlp, many, y)
    assert acc(digits_mlp, one, y) < acc(digits_mlp, x, y) - 0.1


def test_apgd_checkpoints_follow_the_paper():
    # p_0=0, p_1=0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): for 100 steps 22, 41, 57, 70, ...
    assert sorted(checkpoints(100))[:4] == [22, 41, 57, 70]
