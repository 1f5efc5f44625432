"""Every registered threat answers skip_reason for every access level and with or without a recipe, without
raising: the plan asks all of them before anything runs (a threat that read a black-box target's module
crashed the spam-filter audit once)."""
from pathlib import Path

from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import all_threats
from mlwarden.core.target import Access, TorchTarget
from mlwarden.core.threat import Context


def test_every_threat_gives_a_skip_reason_without_raising(digits, digits_mlp, tmp_path):
    for access in Access:
        for recipe in (None, BUILTIN_RECIPES["mlp"]):
            ctx = Context(target=TorchTarget(digits_mlp, 10, digits.input_shape, access=access), data=digits,
                          recipe=recipe, evidence_dir=Path(tmp_path))
            for name, threat in all_threats().items():
                reason = threat.skip_reason(ctx)
                assert reason is None or isinstance(reason, str), (name, access, reason)
                if access is not Access.WHITE_BOX and threat.needs is Access.WHITE_BOX:
                    assert reason is not None and "white-box" in reason, (name, access, reason)
