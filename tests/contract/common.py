"""The contract every registered threat keeps on every model kind (issue 33), as scikit-learn's
`parametrize_with_checks` keeps one for every estimator: audited from the command line, as a user runs it, with
every threat named, the run exits 0 or 1, and each threat either finishes with a finding whose rates carry their
sample size and interval, or is skipped with a reason. A failed attack (an exception, a blown time budget) breaks
the contract.

One audit per kind runs every threat once; the per-threat tests read its report, so a failure names the pair."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mlwarden.core.registry import all_defenses, all_threats

from ..cli.run import infer_body, mlwarden, served
from .kinds import Built, Kind

THREATS = sorted(all_threats())
WHITE_BOX = {n for n, t in all_threats().items() if t.needs.value == "white-box"}
# Every threat at its smallest settings that still run all of its code (the contract is about finishing, not
# about strength; each threat's own tests measure that). A name or value a threat does not accept is exit 2 and
# fails the suite, so this table stays true to the threats' parameters.
CONFIG = """
[audit]
time_budget_s = 300

[threats.whitebox-cascade]
n_samples = 30
apgd_steps = 10
square_queries = 100
curve_steps = 5

[threats.fgsm]
n_samples = 30

[threats.pgd-linf]
n_samples = 30
steps = 10

[threats.pgd-l2]
n_samples = 30
steps = 10

[threats.apgd-ce]
n_samples = 30
steps = 10

[threats.apgd-dlr-t]
n_samples = 30
steps = 10

[threats.square]
n_samples = 30
max_queries = 100

[threats.hopskipjump]
n_samples = 10
max_iter = 3
init_evals = 20
max_evals = 100

[threats.tree-milp]
n_samples = 10
time_limit_s = 1.0

[threats.eot-pgd]
n_samples = 20
steps = 5
eot_samples = 2
eval_draws = 2

[threats.adversarial-patch]
steps = 30
n_samples = 40
placements = 2

[threats.membership-inference]
n_reference = 2

[threats.label-only-membership]
n_reference = 2
augmentations = 2
draws = 2

[threats.extract-equation-solving]
n_uniform = 500
lbfgs_iters = 50

[threats.extract-retraining]
budget = 100
epochs = 20
rounds = 2
n_uniform = 500

[threats.extract-knockoff]
budget = 200
epochs = 10
n_uniform = 500

[threats.extract-jacobian]
seeds_per_class = 2
rounds = 2
epochs = 10
n_uniform = 500

[threats.extract-path-finding]
max_queries = 5000
n_uniform = 500

[threats.extract-linear-boundary]
n_uniform = 500

[threats.extract-svm-margin]
initial = 50
rounds = 2
per_round = 20
candidates = 500
n_uniform = 500

[threats.label-flipping]
budgets = [0.3]
strategies = ["targeted"]

[threats.spam-dictionary]
controls = [0.01]
dictionaries = ["optimal"]

[threats.spam-focused]
known_fractions = [0.5]
targets = 2

[threats.gradient-poisoning]
poisons = [5]
steps = 10
validation = 50

[threats.backdoor]
triggers = ["patch"]
rates = [0.05]
strip_clean = 100
strip_test = 50
defended_points = 50

[threats.feature-collision]
targets = 2
poisons = 2
steps = 10

[threats.gradient-matching]
targets = 2
steps = 10
restarts = 1
surrogates = 1

[threats.neural-cleanse]
clean = 100
steps = 20
batch = 32
"""

# Every defence at its smallest settings that still run all of its code (the contract is about finishing; each
# defence's own tests measure its effect). A name a defence does not accept fails the suite (pydantic).
DEFENCES = {
    "dp-sgd": {"epochs": 2, "one_run_canaries": 100},
    "adversarial-training": {"steps": 2, "epochs": 2, "overfit_points": 32},
    "randomized-smoothing": {"n0": 20, "n": 100, "n_points": 10, "attack_steps": 2, "draws": 2, "epochs": 2,
                             "radii": [0.0, 0.25]},
    "feature-squeezing": {"oblivious_points": 10},
    "jpeg": {"oblivious_points": 10},
    "denoiser": {"oblivious_points": 10, "epochs": 2},
    "roni": {"trials": 1, "trusted": 40, "train_size": 10, "quiz_size": 10},
    "fine-pruning": {"clean": 50, "epochs": 1},
    "nc-unlearning": {"clean": 50, "epochs": 1, "steps": 10, "scan_points": 30},
}


class Audits:
    """The report of each kind's one audit, made the first time a test asks for it."""

    def __init__(self, root: Path):
        self.root, self.reports, self.built, self.configs, self.verdicts = root, {}, {}, {}, {}

    def folder(self, kind: Kind) -> Path:
        return self.root / re.sub(r"[^A-Za-z0-9.+-]+", "_", kind.name)

    def config(self, kind: Kind) -> Path:
        return self.configs[kind.name]

    def report(self, kind: Kind) -> dict:
        if kind.name not in self.reports:
            folder = self.folder(kind)
            folder.mkdir(parents=True)
            built = kind.build(folder)
            (folder / "contract.toml").write_text(CONFIG)
            self.configs[kind.name] = folder / "contract.toml"
            out = folder / "run"
            args = [*built.data, *(built.recipe if kind.retrains else []), "--threats", ",".join(THREATS),
                    "--config", folder / "contract.toml", "--out", out]
            if built.endpoint:   # the model behind `mlwarden serve`, attacked over HTTP only
                with served(*built.model, data=built.data[1]) as url:
                    r = mlwarden("audit", "--endpoint", f"{url}/v2/models/model", *args)
            else:
                r = mlwarden("audit", "--model", *built.model, *args)
            self.built[kind.name] = built
            self.reports[kind.name] = (r, out)
        r, out = self.reports[kind.name]
        assert r.returncode in (0, 1), f"{kind.name}: exit {r.returncode}: {r.stderr[-1500:]}"
        return json.loads((out / "report.json").read_text())


def finding(report: dict, threat: str) -> dict:
    found = [f for f in report["findings"] if f["threat"] == threat]
    assert len(found) == 1, f"{threat}: {len(found)} findings in the report"
    return found[0]


def check_pair(audits: Audits, kind: Kind, threat: str) -> None:
    f = finding(audits.report(kind), threat)
    assert f["status"] in ("ok", "unreliable", "skipped"), f"{kind.name} x {threat}: {f['status']}: {f['headline']}"
    if f["status"] == "skipped":
        reason = f["headline"].removeprefix("skipped:").strip()
        assert len(reason) > 10, f"{kind.name} x {threat}: skipped without a reason"
        return
    for m in f.get("metrics", []):   # a rate is reported with its sample size and interval
        if m["unit"] == "rate" and m["n"] and m["value"] == m["value"]:
            assert m["ci_low"] is not None and m["ci_low"] <= m["value"] <= m["ci_high"], (threat, m)


def check_claims(audits: Audits, kind: Kind) -> None:
    """The kind's row of the README table, measured: white-box threats finish on it exactly when it claims
    white-box access, and at least one black-box threat finishes on it."""
    report = audits.report(kind)
    ran = {f["threat"] for f in report["findings"] if f["status"] in ("ok", "unreliable")}
    assert bool(ran & WHITE_BOX) == kind.white_box, (kind.name, sorted(ran & WHITE_BOX))
    assert bool(ran - WHITE_BOX - {"unsafe-model-file"}) == kind.black_box, (kind.name, sorted(ran - WHITE_BOX))


def check_serve(audits: Audits, kind: Kind) -> None:
    """`mlwarden serve` on the kind's file answers an OIP v2 inference request with what the audit's model
    answers: one row of class scores per input."""
    import httpx
    import numpy as np
    audits.report(kind)
    built = audits.built[kind.name]
    x = np.load(built.data[1])["x_test"][:3]
    with served(*built.model, data=built.data[1]) as url:
        r = httpx.post(f"{url}/v2/models/model/infer", json=infer_body(x), timeout=60)
    assert r.status_code == 200, r.text[:300]
    out = r.json()["outputs"][0]
    assert out["shape"][0] == 3 and np.isfinite(np.asarray(out["data"], float)).all(), out


def check_serve_refuses(audits: Audits, kind: Kind) -> None:
    """`mlwarden serve` on a kind it cannot serve (raw text: the Open Inference Protocol server takes numeric
    tensors) exits 2 at once with one line that says why, before it listens."""
    audits.report(kind)
    built = audits.built[kind.name]
    r = mlwarden("serve", *built.model, *built.data, "--port", "0", timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "not supported" in lines[0], (r.returncode, r.stderr[-800:])


def check_harden(audits: Audits, kind: Kind) -> None:
    """`mlwarden harden --defense X` (at DEFENCES' small settings) on the kind's file re-audits the threats X
    mitigates, before and after, and exits 0 or 1 with its comparison written; the model it retrains is saved
    in the kind's own format and audits from the command line."""
    audits.report(kind)
    built = audits.built[kind.name]
    folder = audits.folder(kind) / "harden"
    params = [a for k, v in DEFENCES.get(kind.harden, {}).items()
              for a in ("--param", f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")]
    r = mlwarden("harden", "--model", *built.model, *built.data, *built.recipe, "--defense", kind.harden, *params,
                 "--config", audits.config(kind), "--out", folder)
    assert r.returncode in (0, 1), f"{kind.name}: harden exit {r.returncode}: {r.stderr[-1500:]}"
    point = json.loads((folder / "harden.json").read_text())["points"][0]
    # an inference defence wraps the user's model and saves nothing; every other kind writes the hardened model
    assert (point["model"] is None) == (all_defenses()[kind.harden].kind == "inference"), (kind.name, point["model"])
    if point["model"] is None:
        return
    saved = point["model"]["path"]
    assert Path(saved).exists(), (kind.name, point["model"])
    # the hardened model, as harden wrote it, audits from the command line with nothing but the file
    again = mlwarden("audit", "--model", saved, *built.data, "--threats", "fgsm,membership-inference",
                     "--config", audits.config(kind), "--out", folder / "again")
    assert again.returncode in (0, 1), f"{kind.name}: audit of {saved}: exit {again.returncode}: {again.stderr[-800:]}"


def subject_of(built: Built):
    """The audit subject the command line builds from the kind's arguments, in this process."""
    from mlwarden.audit.config import AuditConfig
    from mlwarden.audit.subject import subject_from_config
    model, flags = built.model[0], built.model[1:]
    opts = {"factory": None, "arch": None, "recipe": built.recipe[1] if built.recipe else None}
    for flag, key in (("--factory", "factory"), ("--arch", "arch")):
        if flag in flags:
            opts[key] = flags[flags.index(flag) + 1]
    cfg = AuditConfig.model_validate({"model": {"path": model, "allow_pickle": "--allow-pickle" in flags, **opts},
                                      "data": {"path": built.data[1]}})
    return subject_from_config(cfg)


def check_defences(audits: Audits, kind: Kind) -> dict[str, str]:
    """Every registered defence, chosen for the kind's model, is either accepted or refused in one line that
    names it, before anything trains: what `mlwarden harden --defense NAME` checks first. The defence the kind
    is hardened with is accepted. Returns defence -> "accepted" or the refusal."""
    from mlwarden.core.defense import check_applicable
    from mlwarden.core.errors import UserError
    if kind.name in audits.verdicts:
        return audits.verdicts[kind.name]
    audits.report(kind)
    subject = subject_of(audits.built[kind.name])
    verdicts = {}
    for name, d in sorted(all_defenses().items()):
        try:
            check_applicable(subject, [(d, d.params_for("quick"))], subject.data)
            verdicts[name] = "accepted"
        except UserError as e:
            message = str(e)
            assert message and "\n" not in message and len(message) < 600, (kind.name, name, message)
            verdicts[name] = message
    assert kind.harden is None or verdicts[kind.harden] == "accepted", (kind.name, verdicts.get(kind.harden))
    audits.verdicts[kind.name] = verdicts
    return verdicts


def check_defences_apply(audits: Audits, kind: Kind) -> None:
    """Every defence the kind's model accepts (check_defences) is applied to it as `mlwarden harden` applies it
    (in this process, at DEFENCES' small settings, without the before/after audits that check_harden runs for
    one defence per kind): it finishes, the defended model answers test inputs with one finite row of class
    scores each, a network it retrains or repairs is saved as harden saves it, and the defence's own checks
    (`evaluate`) finish. Every failure is collected, so one run names every broken pair."""
    import time
    import traceback

    import torch

    from mlwarden.audit.runner import seed_everything
    from mlwarden.core.defense import DefenseContext, apply_defenses
    from mlwarden.core.errors import UserError
    from mlwarden.io.models import save_module
    accepted = [name for name, v in check_defences(audits, kind).items() if v == "accepted"]
    assert kind.harden is None or kind.harden in accepted
    subject = subject_of(audits.built[kind.name])
    x = subject.data.x_test[:8]
    failed, applied = {}, {}   # defence -> seconds it took
    for name in accepted:
        d = all_defenses()[name]
        folder = audits.folder(kind) / "defences" / name
        t0 = time.monotonic()
        try:
            params = d.params_for("quick", DEFENCES.get(name))
            ctx = DefenseContext(subject.data, folder, seed=0, profile="quick")
            seed_everything(0)
            try:
                hardened = apply_defenses(subject, [(d, params)], ctx)
            except UserError as e:   # refused when applied (a defence that retrains, without the recipe): one line
                assert str(e) and "\n" not in str(e), str(e)
                continue
            scores = hardened.target.scores(x)
            assert tuple(scores.shape) == (len(x), subject.data.n_classes), tuple(scores.shape)
            assert torch.isfinite(scores).all(), "scores that are not finite"
            if isinstance(hardened.model, torch.nn.Module):
                saved = save_module(hardened.model, subject.data, folder / "hardened" / "model")
                assert Path(saved["path"]).exists(), saved
            d.evaluate(subject, hardened, params, ctx)
            applied[name] = time.monotonic() - t0
        except Exception as e:  # noqa: BLE001 - collected, every pair named in the failure
            failed[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}"
    assert not failed, f"{kind.name}: " + "\n".join(f"{n}: {m}" for n, m in failed.items())
    assert kind.harden is None or kind.harden in applied, (kind.name, sorted(applied))
    print(f"{kind.name}: applied {', '.join(f'{n} ({t:.0f} s)' for n, t in applied.items())}; "
          f"refused {len(all_defenses()) - len(applied)}")


def parametrize(kinds: list[Kind]):
    pairs = [pytest.param(k, t, id=f"{k.name}-{t}") for k in kinds for t in THREATS]
    return pytest.mark.parametrize("kind,threat", pairs)


def contract_tests(kinds: list[Kind], label: str) -> dict:
    """The contract's fixture and tests over `kinds`, for a test module to take into its namespace (one module per
    group of kinds, so that pytest-xdist's `--dist loadfile` runs the groups side by side). A test whose claim no
    kind of the group makes (a group that is never served) is left out, not skipped."""
    @pytest.fixture(scope="module")
    def audits(tmp_path_factory):
        return Audits(tmp_path_factory.mktemp(f"contract-{label}"))

    @parametrize(kinds)
    def test_every_threat_finishes_or_skips_with_a_reason(audits, kind, threat):
        check_pair(audits, kind, threat)

    def per_kind(check, chosen):
        if not chosen:
            return None

        @pytest.mark.parametrize("kind", chosen, ids=lambda k: k.name)
        def test(audits, kind):
            check(audits, kind)
        return test

    tests = {"audits": audits,
             "test_every_threat_finishes_or_skips_with_a_reason": test_every_threat_finishes_or_skips_with_a_reason,
             "test_the_readme_claims_hold": per_kind(check_claims, kinds),
             "test_every_defence_accepts_or_refuses_in_one_line": per_kind(
                 check_defences, [k for k in kinds if not k.name.startswith("HTTP")]),
             "test_every_accepted_defence_applies": per_kind(
                 check_defences_apply, [k for k in kinds if not k.name.startswith("HTTP")]),
             "test_serve_answers": per_kind(check_serve, [k for k in kinds if k.serve]),
             "test_serve_refuses_in_one_line": per_kind(check_serve_refuses, [k for k in kinds if k.serve is False]),
             "test_harden_runs": per_kind(check_harden, [k for k in kinds if k.harden])}
    return {name: test for name, test in tests.items() if test is not None}
