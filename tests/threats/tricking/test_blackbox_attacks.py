"""Square (scores) and HopSkipJump (labels) through a counted target."""

from mlwarden.core.target import Access, TorchTarget
from mlwarden.threats.tricking.hopskipjump import hop_skip_jump
from mlwarden.threats.tricking.square import square_linf

from .helpers import acc, in_ball, points, seeded


def test_square_1000_queries_cuts_accuracy(digits, digits_mlp):
    x, y = points(digits, 150)
    target = TorchTarget(digits_mlp, 10, digits.input_shape, access=Access.SCORES)
    seeded()
    with target.budget(150 * 1000):
        adv, q, fooled = square_linf(target.scores, x, y, 0.15, 0.0, 1.0, max_queries=1000)
    assert target.spent <= 150 * 1000 and int(q.max()) <= 1000
    assert in_ball(adv, x, 0.15)
    clean, robust = acc(digits_mlp, x, y), acc(digits_mlp, adv, y)
    assert robust < clean - 0.4, (clean, robust)
    assert bool(fooled.sum() == (digits_mlp(adv).argmax(1) != y).sum())


def test_hopskipjump_from_labels_cuts_accuracy(digits, digits_cnn):
    x, y = points(digits, 80)
    target = TorchTarget(digits_cnn, 10, digits.input_shape, access=Access.LABELS)
    seeded()
    with target.budget(None):
        adv, found = hop_skip_jump(target.labels, x, y, 0.0, 1.0, norm="l2", max_iter=10)
    assert target.spent > 0
    ok = digits_cnn(x).argmax(1) == y
    dist = (adv - x).flatten(1).norm(dim=1)
    broken = ok & found & (digits_cnn(adv).argmax(1) != y) & (dist <= 1.5)
    assert float(broken.float().mean()) > 0.6
    assert in_ball(adv, x, 100.0, "l2")  # stays in the input box


def test_hopskipjump_linf_finds_adversarials(digits, digits_mlp):
    x, y = points(digits, 50)
    target = TorchTarget(digits_mlp, 10, digits.input_shape, access=Access.LABELS)
    seeded()
    adv, found = hop_skip_jump(target.labels, x, y, 0.0, 1.0, norm="linf", max_iter=10)
    ok = digits_mlp(x).argmax(1) == y
    broken = ok & found & (digits_mlp(adv).argmax(1) != y) & ((adv - x).flatten(1).abs().amax(1) <= 0.3)
    assert float(broken.float().mean()) > 0.5
