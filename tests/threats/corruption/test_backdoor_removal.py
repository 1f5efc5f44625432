"""Is this downloaded model backdoored, and can it be cleaned? MNIST (5k/5k, the small CNN), the BadNets model
of conftest (10% poison, 3x3 patch, target 3) and its clean twin (same recipe and seed, clean data):
- Neural Cleanse flags no class of the clean twin;
- `harden --defense nc-unlearning` (the Python API, re-auditing with the neural-cleanse scan) flags class 3
  before, unlearns its reversed trigger, and the repaired model sends under 10% of triggered inputs to
  class 3 with clean accuracy within 2 points (paired interval);
- fine-pruning silences the pruned channels, keeps the held-out drop within its limit and exports; its
  attack success is measured and printed (on this model it does not remove the backdoor: see
  docs/threats.md)."""
from pathlib import Path

import torch

from mlwarden.core.measure import correct, paired_difference
from mlwarden.core.registry import all_threats
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.defenses.fine_pruning import ChannelMask, PruneParams, fine_prune
from mlwarden.defenses.repair import clean_set
from mlwarden.io.models import load_target, save_module
from mlwarden.threats.corruption.backdoor import attack_success


def _scan(model, data, tmp_path):
    ctx = Context(target=TorchTarget(model, 10, data.input_shape), data=data, evidence_dir=Path(tmp_path) / "e" / "nc")
    t = all_threats()["neural-cleanse"]
    return t.run(ctx, t.params_for("quick"))


def _asr(model, data, trigger) -> float:
    return float(attack_success(model, data.x_test, data.y_test, trigger, "all-to-one", 3, 10).float().mean())


def test_neural_cleanse_flags_no_class_of_the_clean_twin(mnist, mnist_cnn, tmp_path):
    clean = _scan(mnist_cnn, mnist, tmp_path)
    assert clean.details["flagged"] == [], clean.details["table"]
    assert clean.metric("largest anomaly index").value <= 2 and clean.severity.value == "info"


def test_nc_unlearning_finds_and_removes_the_badnets_backdoor(mnist, badnets_cnn, badnets_trigger, tmp_path):
    from mlwarden.api import harden
    assert _asr(badnets_cnn, mnist, badnets_trigger) > 0.95
    res = harden(badnets_cnn, mnist, "nc-unlearning", threats=["neural-cleanse"], out=tmp_path / "h")
    before = res.before.findings[0]
    assert before.details["flagged"] == [3], before.details["table"]
    assert before.metric("largest anomaly index").value > 2 and before.severity.value == "high"
    assert before.metric("class 3: smallest trigger (mask L1)").value < 10       # a 3x3 patch is 9 pixels
    assert (tmp_path / "h" / "before" / before.evidence[0]).exists()
    point = res.summary["points"][0]
    assert point["facts"]["nc-unlearning"]["unlearned"] == [3]
    repaired = load_target(point["model"]["path"], mnist).module
    asr = _asr(repaired, mnist, badnets_trigger)
    change = paired_difference(correct(badnets_cnn, mnist.x_test, mnist.y_test),
                               correct(repaired, mnist.x_test, mnist.y_test))
    print(f"nc-unlearning: attack success {100 * asr:.1f}% (n={int((mnist.y_test != 3).sum())}); clean accuracy "
          f"change {100 * change[0]:+.2f} points (95% CI {100 * change[1]:+.2f} to {100 * change[2]:+.2f})")
    assert asr < 0.10
    assert change[0] > -0.02
    assert point["accuracy_change"]["points"] == change[0]
    after = res.after[0].findings[0]
    print(f"Neural Cleanse after unlearning: flagged {after.details['flagged']}, class 3 trigger "
          f"{after.metric('class 3: smallest trigger (mask L1)').value:.1f} px (before "
          f"{before.metric('class 3: smallest trigger (mask L1)').value:.1f})")
    assert after.metric("class 3: smallest trigger (mask L1)").value > 2 * before.metric(
        "class 3: smallest trigger (mask L1)").value
    assert "nc-unlearning" in (tmp_path / "h" / "harden.md").read_text()
    row = res.summary["points"][0]["comparison"][0]
    assert row["still_flagged"] == [] and row["no_longer_flagged"] == [3] and "not removed" not in res.summary["verdict"]


def test_fine_pruning_clears_the_scan_but_the_verdict_does_not_call_the_backdoor_removed(mnist, badnets_cnn,
                                                                                         badnets_trigger, tmp_path):
    """Fine-pruning at its defaults brings Neural Cleanse's anomaly index for class 3 under the flag (2.44 -> 1.58
    here; issue 34 saw 2.45 -> 2.04), yet the trigger still works on the pruned model. The verdict says what the
    scan saw and that it does not show the backdoor gone; it never reads as removal."""
    from mlwarden.api import harden
    res = harden(badnets_cnn, mnist, "fine-pruning", threats=["neural-cleanse"], out=tmp_path / "h")
    row = res.summary["points"][0]["comparison"][0]
    pruned = load_target(res.summary["points"][0]["model"]["path"], mnist).module
    asr = _asr(pruned, mnist, badnets_trigger)
    print(f"fine-pruning: attack success {100 * asr:.1f}% after; {res.summary['verdict']}")
    assert asr > 0.5, asr                                       # the backdoor survives the repair
    after = res.after[0].findings[0]
    assert after.details["flagged"] == [] and row["still_flagged"] == [] and row["no_longer_flagged"] == [3]
    assert "(no longer flags 3: a scan that stops finding a trigger does not show the backdoor is gone" in \
        res.summary["verdict"]


def test_fine_pruning_silences_dormant_channels_and_exports(mnist, badnets_cnn, badnets_trigger, tmp_path):
    x, y = clean_set(mnist, 500, 0)
    p = PruneParams()
    tuned, facts = fine_prune(badnets_cnn, x, y, 10, p, 0)
    held = facts["held_out_accuracy"]
    assert 0 < facts["channels_pruned"] < facts["channels"]
    assert held["before"] - held["pruned"] <= p.max_drop
    masks = [m for m in tuned.modules() if isinstance(m, ChannelMask)]
    assert len(masks) == 1 and int((masks[0].mask == 0).sum()) == facts["channels_pruned"]
    seen = {}
    masks[0].register_forward_hook(lambda m, i, out: seen.__setitem__("out", out))
    with torch.no_grad():
        tuned(mnist.x_test[:50])
    assert seen["out"][:, masks[0].mask == 0].abs().max() == 0          # fine-tuning did not revive them
    saved = save_module(tuned, mnist, tmp_path / "fp")
    assert saved["format"] == "export"
    loaded = load_target(saved["path"], mnist).module
    with torch.no_grad():
        assert torch.equal(loaded(mnist.x_test[:50]).argmax(1), tuned(mnist.x_test[:50]).argmax(1))
    change = paired_difference(correct(badnets_cnn, mnist.x_test, mnist.y_test),
                               correct(tuned, mnist.x_test, mnist.y_test))
    print(f"fine-pruning: {facts['channels_pruned']}/{facts['channels']} channels; attack success "
          f"{100 * _asr(badnets_cnn, mnist, badnets_trigger):.1f}% -> {100 * _asr(tuned, mnist, badnets_trigger):.1f}%; "
          f"clean accuracy change {100 * change[0]:+.2f} points (95% CI {100 * change[1]:+.2f} to {100 * change[2]:+.2f})")
    assert change[0] > -0.02


def test_neural_cleanse_flags_the_same_class_in_the_pt2_as_in_the_state_dict(mnist, badnets_cnn, tmp_path):
    """The scan on the backdoored model as users ship it: a `torch.export` archive (the format harden writes) and
    a state dict with its factory, each loaded from the file, flag the same class (issue 33)."""
    saved = save_module(badnets_cnn, mnist, tmp_path / "badnets")
    assert saved["format"] == "export"
    torch.save(badnets_cnn.state_dict(), tmp_path / "badnets.pt")
    from_pt2 = load_target(saved["path"], mnist)
    from_state_dict = load_target(str(tmp_path / "badnets.pt"), mnist, factory="tests.conftest:small_cnn16")
    assert type(from_pt2.module).__name__ == "ExportedModule"
    flagged = [_scan(t.module, mnist, tmp_path / f"scan-{i}").details["flagged"]
               for i, t in enumerate((from_state_dict, from_pt2))]
    print(f"Neural Cleanse flags {flagged[0]} on the state dict and {flagged[1]} on the .pt2")
    assert flagged[0] == flagged[1] == [3]
