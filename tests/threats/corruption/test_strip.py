"""STRIP (Gao et al. 2019) and the backdoors built to beat the detectors, on MNIST (5k/5k, the small CNN):
- calibrated to 1% false rejection on clean training images, STRIP rejects the BadNets model's triggered
  inputs (false acceptance reported with its interval) and not its clean twin's (where a trigger is just
  noise, so the triggered inputs look clean);
- the backdoor threat's table names the detector each adaptive attack beats: the anti-STRIP patch (cover
  points teach the trigger to fail inside a superimposition) is accepted by STRIP, the blended pattern is
  not flagged by Neural Cleanse, and both still work."""
from pathlib import Path

import pytest
import torch

from mlwarden.core.finding import Metric
from mlwarden.core.registry import all_threats
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.scans.strip import Strip


def _rates(model, data, trigger):
    s = Strip.calibrate(model, data.x_train[:600], draws=20, frr=0.01)
    rej_clean, _ = s.reject(data.x_test[:300])
    rej_trig, _ = s.reject(trigger(data.x_test[data.y_test != 3][:300]))
    return (Metric.rate("FRR", int(rej_clean.sum()), len(rej_clean)),
            Metric.rate("FAR", int((~rej_trig).sum()), len(rej_trig)))


def test_strip_at_1pct_frr_rejects_badnets_triggers(mnist, badnets_cnn, mnist_cnn, badnets_trigger):
    frr, far = _rates(badnets_cnn, mnist, badnets_trigger)
    print(f"STRIP on BadNets: FRR {frr.text()}, FAR {far.text()}")
    assert far.ci_high < 0.05
    assert frr.value < 0.05
    _, far_clean = _rates(mnist_cnn, mnist, badnets_trigger)
    print(f"STRIP on the clean twin: triggered inputs accepted {far_clean.text()}")
    assert far_clean.value > 0.8


@pytest.mark.slow
def test_adaptive_backdoors_beat_the_detector_they_target(mnist, mnist_recipe, tmp_path):
    t = all_threats()["backdoor"]
    p = t.params_for("quick", {"triggers": ["patch-anti-strip", "blend"], "rates": [0.1], "headline_rate": 0.1,
                               "target": 3, "detectors": ["strip", "neural-cleanse"], "scan_steps": 100,
                               "strip_clean": 400, "strip_test": 200})
    ctx = Context(target=TorchTarget(torch.nn.Identity(), 10, mnist.input_shape), data=mnist,
                  evidence_dir=Path(tmp_path) / "e" / "bd", recipe=mnist_recipe)
    f = t.run(ctx, p)
    rows = {r["attack"]: r for r in f.details["table"]}
    for r in rows.values():
        print(r["attack"], "|", r["attack success"], "|", r["STRIP FAR (triggered)"], "|", r["Neural Cleanse"], "|",
              r["beats"])
    anti, blend = rows["patch-anti-strip"], rows["blend"]
    assert f.metric("patch-anti-strip 10%: attack success rate").value > 0.5
    assert f.metric("blend 10%: attack success rate").value > 0.5
    assert "STRIP" in anti["beats"].split(", ")
    assert f.metric("patch-anti-strip 10%: STRIP accepts triggered inputs (FAR)").ci_low > 0.5
    assert "Neural Cleanse" in blend["beats"].split(", ")
