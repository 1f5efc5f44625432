"""The bad-input corpus, run in-process (no interpreter start per case): every case is one line on stderr
naming the problem, exit code 2, no traceback and no report; an internal bug is exit 3 with a pointer to
the traceback, never 1 (which means a finding at or above --fail-on)."""
import sys

import numpy as np
import pytest

from mlwarden.cli import main as cli


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    d = tmp_path_factory.mktemp("corpus")
    x, y = digits.x_test.numpy(), digits.y_test.numpy()
    np.savez(d / "one_class.npz", x=x, y=np.zeros_like(y))
    np.savez(d / "huge_label.npz", x=x, y=np.where(np.arange(len(y)) == 0, 2 ** 40, y))
    np.savez(d / "empty.npz", x=x[:0], y=y[:0])
    np.savez(d / "good.npz", x=x, y=y)
    np.savez(d / "scalar.npz", x=np.float32(3.0), y=np.int64(1))
    np.savez(d / "onehot.npz", x=x, y=np.eye(10)[y])
    (d / "a_file").write_text("not a folder")
    (d / "bom.csv").write_text("\ufefflabel,a,b\n" + "".join(f"{i % 2},{i},{i * 2}\n" for i in range(40)),
                               encoding="utf-8")
    (d / "text_col.csv").write_text("label,a,colour\n" + "".join(f"{i % 2},{i},red\n" for i in range(40)))
    (d / "registry.jsonl").write_text('{"x": 1}\nnot json\n[1, 2]\n')
    (d / "empty_registry.jsonl").write_text("")
    (d / "text.npz").write_text("not a zip")
    np.savez(d / "wrong_keys.npz", a=x, b=y)
    (d / "ragged.csv").write_text("label,a,b\n" + "".join(f"{i % 2},{i},{i}\n" for i in range(10)) + "1,2\n")
    (d / "badreport").mkdir()
    (d / "badreport" / "report.json").write_text('{"schema": "mlwarden.report/1", "findings": [{"threat": 3}]}')
    (d / "notjson").mkdir()
    (d / "notjson" / "report.json").write_text("{not json")
    msgs = "".join(f"{'spam' if i % 5 == 0 else 'ham'}\tmessage number {i} about lunch\n" for i in range(60))
    (d / "msgs.tsv").write_text(msgs)
    (d / "no_tab.tsv").write_text("ham hello there\n")
    (d / "bad_label.tsv").write_text("ham\thello\nmaybe\tcall now\n")
    (d / "all_ham.tsv").write_text("ham\thello\nham\tlunch?\nham\tok\n")
    (d / "latin1.tsv").write_bytes(b"ham\tcaf\xe9 at noon\nspam\twin\n")
    (d / "fed_badparam.toml").write_text('[federated]\naggregator = "trimmed-mean"\n[federated.aggregator_params]\n'
                                         'beta = 0.7\n')
    (d / "fed_krum_f.toml").write_text('[federated]\naggregator = "krum"\n[federated.aggregator_params]\nf = 3\n')
    (d / "fed_fraction.toml").write_text('[threats.sign-flipping]\nfractions = [1.0]\n')
    (d / "dlg_batch0.toml").write_text('[threats.dlg]\nbatch_sizes = [0]\n')
    (d / "he_ring.toml").write_text('[federated.aggregator_params]\npoly_modulus_degree = 1000\n')
    (d / "msgs_no_label.csv").write_text("kind,text\nham,hello\nspam,win now\n")
    (d / "four.tsv").write_text("ham\thello there\nspam\tfree money\nham\tsee you\nspam\twin cash\n")
    (d / "numeric_text.csv").write_text("f1,text,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20)))
    (d / "bad_controls.toml").write_text('[threats.spam-dictionary]\ncontrols = [0.01, 0]\n')
    (d / "bad_backdoor.toml").write_text('[threats.backdoor]\nrates = [0.05, 0.9]\n')
    (d / "bad_trigger.toml").write_text('[threats.backdoor]\ntriggers = ["sticker"]\n')
    (d / "bad_detector.toml").write_text('[threats.backdoor]\ndetectors = ["activation-magic"]\n')
    (d / "bad_strip_frr.toml").write_text('[threats.backdoor]\nstrip_frr = 0.9\n')
    (d / "bad_temperature.toml").write_text('[threats.membership-inference]\ntemperature = 0\n')
    (d / "bad_sigma.toml").write_text('[threats.label-only-membership]\nsigmas = [0.1, 0]\n')
    (d / "no_queries.toml").write_text('[threats.label-only-membership]\naugmentations = 1\ndraws = 0\n')
    (d / "bad_views.toml").write_text('[threats.membership-inference]\naugmentations = 10\n')
    (d / "bad_min_length.toml").write_text('[threats.lm-membership]\nmin_length = 0\n')
    (d / "deep.toml").write_text("[threats.fgsm]\nx = " + "[" * 3000 + "]" * 3000 + "\n")
    (d / "deep_table.toml").write_text("[threats.fgsm]\nx = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n")
    (d / "label_only.csv").write_text("label\n" + "".join(f"{i % 2}\n" for i in range(20)))
    (d / "a_folder").mkdir()
    return d


MLP = ["--factory", "mlwarden.core.zoo:mlp"]
CASES = {
    "empty --threats": (["audit", "--threats", ""], "--threats is empty"),
    "empty --threats in harden": (["harden", "--defense", "adversarial-training", "--threats", " , "],
                                  "--threats is empty"),
    "Linf eps over the range": (["audit", "--eps", "1.5", "--threats", "fgsm"], "covers the whole input range"),
    "infinite input range": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/good.npz", "--input-range", "0,inf"],
                             "must be finite"),
    "one class": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/one_class.npz"], "at least two classes"),
    "label 2^40": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/huge_label.npz"], "are the labels ids or one-hot"),
    "no rows": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/empty.npz"], "the data has 0 rows"),
    "AT eps over the range": (["harden", "--defense", "adversarial-training", "--param", "eps=2"],
                              "covers the whole input range"),
    "AT unknown method": (["harden", "--defense", "adversarial-training", "--param", "method=free"],
                          "method: Input should be"),
    "smoothing sigma negative": (["harden", "--defense", "randomized-smoothing", "--param", "sigma=-1"],
                                 "sigma: Input should be greater than 0"),
    "smoothing radius not a number": (["harden", "--defense", "randomized-smoothing", "--param", "radii=0,big"],
                                      "radii.1: Input should be a valid number"),
    "smoothing with adversarial training": (["harden", "--defense", "randomized-smoothing,adversarial-training"],
                                            "cannot be combined with another batch transform"),
    "jpeg quality 0": (["harden", "--defense", "jpeg", "--param", "quality=0"], "quality: Input should be"),
    "squeezing nothing": (["harden", "--defense", "feature-squeezing", "--param", "bits=0"], "needs bits or median"),
    "unknown defence": (["harden", "--defense", "no-such-defence"], "no-such-defence"),
    "detector threshold 1": (["harden", "--defense", "spectral-signatures", "--param", "threshold=1"],
                             "threshold: Input should be less than 1"),
    "backdoor rate over half": (["audit", "--config", "{d}/bad_backdoor.toml", "--threats", "backdoor"],
                                "less than or equal to 0.5"),
    "backdoor unknown detector": (["audit", "--config", "{d}/bad_detector.toml", "--threats", "backdoor"],
                                  "detectors"),
    "backdoor STRIP FRR 0.9": (["audit", "--config", "{d}/bad_strip_frr.toml", "--threats", "backdoor"], "strip_frr"),
    "membership temperature 0": (["audit", "--config", "{d}/bad_temperature.toml", "--threats",
                                  "membership-inference"], "temperature"),
    "label-only sigma 0": (["audit", "--config", "{d}/bad_sigma.toml", "--threats", "label-only-membership"],
                           "sigmas.1: Input should be greater than 0"),
    "label-only one query": (["audit", "--config", "{d}/no_queries.toml", "--threats", "label-only-membership"],
                             "at least 2 queries per point"),
    "10 views without flips": (["audit", "--config", "{d}/bad_views.toml", "--threats", "membership-inference"],
                               "augmentations"),
    "LM sequences of length 0": (["audit", "--config", "{d}/bad_min_length.toml", "--threats", "lm-membership"],
                                 "min_length"),
    "backdoor unknown trigger": (["audit", "--config", "{d}/bad_trigger.toml", "--threats", "backdoor"],
                                 "triggers.0: Input should be"),
    "serve smoothing zero": (["serve", "--smoothing", "0"], "smoothing_sigma"),
    "negative seed": (["audit", "--seed", "-1"], "seed"),
    "huge seed": (["audit", "--seed", "99999999999999999999"], "seed"),
    "out is a file": (["audit", "--threats", "fgsm", "--out", "{d}/a_file"], "a_file"),
    "out not writable": (["audit", "--threats", "fgsm", "--out", "/proc/mlwarden-run"], "/proc/mlwarden-run"),
    "out under a file": (["audit", "--threats", "fgsm", "--out", "{d}/a_file/run"], "a_file/run"),
    "serve port out of range": (["serve", "--port", "99999"], "port"),
    "query log is a folder": (["serve", "--query-log", "{d}"], "query-log"),
    "scalar x": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/scalar.npz"], "scalar.npz"),
    "one-hot labels": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/onehot.npz"], "one-hot"),
    "negative input shape": (["audit", "--model", "{sd}", *MLP, "--data", "digits", "--input-shape", "-1,8,8"],
                             "input_shape.0: Input should be greater than 0"),
    "non-numeric CSV column": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/text_col.csv",
                                "--label-column", "label"], "colour"),
    "param without =": (["harden", "--defense", "dp-sgd", "--param", "epsilon"], "must look like key=value"),
    "two swept params": (["harden", "--defense", "adversarial-training", "--param", "eps=0.1,0.2", "--param",
                          "beta=1,2"], "only one parameter may take several values"),
    "unknown defence param": (["harden", "--defense", "jpeg", "--param", "speed=3"], "has a parameter 'speed'"),
    "non-numeric sweep": (["harden", "--defense", "adversarial-training", "--param", "method=pgd,trades"],
                          "only numbers can be swept"),
    "empty --defense": (["harden", "--defense", " , "], "--defense needs a defence name"),
    "bad profile": (["audit", "--profile", "fastest"], "audit.profile"),
    "negative time budget": (["audit", "--time-budget", "-1"], "time_budget_s"),
    "zero threads": (["audit", "--threads", "0"], "threads"),
    "zero workers": (["audit", "--workers", "0"], "workers"),
    "unknown backend": (["harden", "--defense", "jpeg", "--backend", "threads"], "audit.backend"),
    "unknown device": (["audit", "--device", "tpu"], "audit.device"),
    "a GPU this machine lacks": (["audit", "--threats", "fgsm", "--device", "cuda:7", "--out", "{d}/gpu"],
                                 "--device cuda:7: no CUDA GPU is visible"),
    "serve on a missing GPU": (["serve", "--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
    "bad access": (["audit", "--access", "root"], "access"),
    "endpoint scheme": (["audit", "--endpoint", "ftp://example.org/m", "--data", "digits"], "must be an http"),
    "model and endpoint": (["audit", "--model", "{sd}", "--endpoint", "http://127.0.0.1:9/v2/models/m"],
                           "either --model or --endpoint"),
    "missing baseline": (["audit", "--threats", "fgsm", "--baseline", "{d}/nope"], "nope"),
    "report of a folder without one": (["report", "{d}"], "no report.json"),
    "report not JSON": (["report", "{d}/notjson"], "not valid JSON"),
    "report of the wrong shape": (["report", "{d}/badreport"], "not an mlwarden report"),
    "scan of a missing path": (["scan", "{d}/nothing.pt"], "nothing.pt"),
    "diff of missing runs": (["diff", "{d}/nope1", "{d}/nope2"], "nope1"),
    "serve bad output": (["serve", "--output", "everything"], "output"),
    "serve top-k 0": (["serve", "--output", "top-k", "--top-k", "0"], "top_k"),
    "serve bad detector": (["serve", "--detector", "maybe"], "detector"),
    "serve bad name": (["serve", "--name", "a/b"], "--name 'a/b'"),
    "empty watermark registry": (["verify-copy", "--registry", "{d}/empty_registry.jsonl", "--model", "{sd}",
                                  "--factory", "mlwarden.core.zoo:mlp", "--suspect", "{sd}"], "holds no watermarked"),
    "missing watermark registry": (["verify-copy", "--registry", "{d}/none.jsonl", "--model", "{sd}",
                                    "--suspect", "{sd}"], "registry not found"),
    "data file missing": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/nope.npz"], "data file not found"),
    "npz that is not a zip": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/text.npz"], "not a readable .npz"),
    "npz without x and y": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/wrong_keys.npz"],
                            "expected arrays 'x' and 'y'"),
    "reversed input range": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/good.npz", "--input-range", "1,0"],
                             "is empty"),
    "non-numeric input range": (["audit", "--input-range", "a,b"], "--input-range"),
    "missing config": (["audit", "--config", "{d}/nope.toml"], "nope.toml"),
    "missing label column": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/ragged.csv", "--label-column", "y"],
                             "no label column 'y'"),
    "ragged CSV": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/ragged.csv"], "line 12 has 2 fields"),
    "harden unknown threat": (["harden", "--defense", "adversarial-training", "--threats", "nosuch"],
                              "unknown threat 'nosuch'"),
    "harden without recipe": (["harden", "--defense", "adversarial-training", "--model", "{sd}", *MLP, "--data",
                               "digits"], "give its training recipe"),
    "serve missing model": (["serve", "{d}/nope.pt2"], "model file not found"),
    "serve zero max batch": (["serve", "--max-batch", "0"], "max_batch"),
    "serve zero rate": (["serve", "--rate", "0"], "rate_per_s"),
    "malformed watermark registry": (["verify-copy", "--registry", "{d}/registry.jsonl", "--model", "{sd}",
                                      "--factory", "mlwarden.core.zoo:mlp", "--suspect", "{sd}"], "registry.jsonl"),
    "messages TSV without a tab": (["audit", "--data", "{d}/no_tab.tsv"], "line 1 has no tab"),
    "messages label neither ham nor spam": (["audit", "--data", "{d}/bad_label.tsv"], "label 'maybe' is neither"),
    "messages of one class": (["audit", "--data", "{d}/all_ham.tsv"], "3 ham and 0 spam"),
    "messages not UTF-8": (["audit", "--data", "{d}/latin1.tsv"], "not UTF-8"),
    "messages CSV without the label column": (["audit", "--data", "{d}/msgs_no_label.csv"], "no column 'label'"),
    "torch model for messages": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/msgs.tsv"],
                                 "scikit-learn text pipeline"),
    "dp-sgd on messages": (["harden", "--defense", "dp-sgd", "--data", "{d}/msgs.tsv"],
                           "dp-sgd applies to image/tabular/text data; this data is messages"),
    "roni on images": (["harden", "--defense", "roni"], "roni applies to messages data; this data is image"),
    "roni trusting more than the data": (["harden", "--defense", "roni", "--data", "{d}/msgs.tsv", "--param",
                                          "trusted=1000"], "trusted=1000 is more than the 45 training messages"),
    "serve a spam filter": (["serve", "--data", "{d}/msgs.tsv"], "serving a spam filter"),
    "messages too few to split": (["audit", "--data", "{d}/four.tsv"], "cannot split 4 rows"),
    "messages CSV whose text column is numbers": (["audit", "--data", "{d}/numeric_text.csv"], "holds only numbers"),
    "a recipe for the spam filter": (["audit", "--data", "{d}/msgs.tsv", "--recipe", "mlp"], "--recipe trains networks"),
    "a control of 0": (["audit", "--data", "{d}/msgs.tsv", "--config", "{d}/bad_controls.toml"],
                       "controls.1: Input should be greater than 0"),
    "endpoint template not JSON": (["audit", "--endpoint", "http://127.0.0.1:9/predict", "--data", "iris",
                                    "--endpoint-template", "{{rows"], "--endpoint-template: not valid JSON"),
    "endpoint template without a response path": (["audit", "--endpoint", "http://127.0.0.1:9/predict", "--data",
                                                   "iris", "--endpoint-template", '{{"x": "{{rows}}"}}'],
                                                  "needs both a request template and a response path"),
    "serve a model without data or shape": (["serve", "{sd}", *MLP], "needs --input-shape"),
    "serve with a missing key file": (["serve", "--api-key-file", "{d}/no-keys.txt"], "cannot read it"),
    "serve with an empty key file": (["serve", "--api-key-file", "{d}/empty_registry.jsonl"], "holds no secret"),
    "serve with an unwritable watermark registry": (["serve", "--watermark-key", "k", "--watermark-registry",
                                                     "/proc/wm.jsonl"], "cannot append"),
    "serve smoothing with label output": (["serve", "--smoothing", "0.25", "--output", "label"],
                                          "--smoothing answers labels"),
    "serve STRIP without data": (["serve", "{sd}", *MLP, "--input-shape", "1,8,8", "--input-range", "0,16",
                                  "--strip"], "--strip needs clean images"),
    "serve STRIP one draw": (["serve", "--strip", "--strip-draws", "1"], "strip_draws"),
    "serve STRIP frr 0.9": (["serve", "--strip", "--strip-frr", "0.9"], "strip_frr"),
    "fine-pruning drops nothing": (["harden", "--defense", "fine-pruning", "--param", "max_prune=0"], "max_prune"),
    "fine-pruning an unknown layer": (["harden", "--defense", "fine-pruning", "--param", "layer=first"], "layer"),
    "unlearning with no clean data": (["harden", "--defense", "nc-unlearning", "--param", "clean=0"], "clean"),
    "fine-pruning a network without conv layers": (["harden", "--defense", "fine-pruning", "--model", "{sd}", *MLP,
                                                    "--data", "digits"], "has no nn.Conv2d"),
    # federations (--federated): every flag and config value a user can get wrong
    "one client": (["audit", "--federated", "--clients", "1"], "federated.clients"),
    "more clients than points": (["audit", "--federated", "--clients", "5000"], "cannot split 1347 training points"),
    "unknown partition": (["audit", "--federated", "--partition", "zipf"], "federated.partition"),
    "dirichlet alpha 0": (["audit", "--federated", "--partition", "dirichlet", "--alpha", "0"], "federated.alpha"),
    "unknown aggregator": (["audit", "--federated", "--aggregator", "mean-of-medians"], "unknown defence"),
    "training defence as aggregator": (["audit", "--federated", "--aggregator", "dp-sgd"],
                                       "not an aggregation rule"),
    "bad aggregator parameter": (["audit", "--federated", "--config", "{d}/fed_badparam.toml"],
                                 "federated.aggregator_params (trimmed-mean)"),
    "krum needing too many attackers": (["audit", "--federated", "--aggregator", "krum", "--config",
                                         "{d}/fed_krum_f.toml"], "more than this rule tolerates"),
    "federated text": (["audit", "--federated", "--data", "stdlib-docstrings"], "image or tabular"),
    "federated endpoint": (["audit", "--federated", "--endpoint", "http://127.0.0.1:9"], "--endpoint"),
    "malicious fraction 1": (["audit", "--federated", "--config", "{d}/fed_fraction.toml"],
                             "threats.sign-flipping"),
    "aggregation rule without a federation": (["harden", "--defense", "krum"], "hardens a federation"),
    "a model factory given as the recipe": (["audit", "--federated", "--recipe", "mlwarden.core.zoo:sigmoid_mlp"],
                                            "function of no arguments"),
    "encrypted without an endpoint": (["audit", "--endpoint-encrypted", "1"], "give its --endpoint URL"),
    "encrypted depth 0": (["audit", "--endpoint", "http://127.0.0.1:9/v2/models/m", "--endpoint-encrypted", "0"],
                          "endpoint_encrypted"),
    "serve --encrypted on a CNN": (["serve", "--encrypted"], "has a Conv2d"),
    "serve --encrypted on a ReLU MLP": (["serve", "{sd}", *MLP, "--data", "digits", "--encrypted"], "has a ReLU"),
    "leakage batch of 0": (["audit", "--federated", "--threats", "dlg", "--config", "{d}/dlg_batch0.toml"],
                           "threats.dlg"),
    "secure aggregation with a bad ring": (["audit", "--federated", "--aggregator", "secure-aggregation",
                                            "--config", "{d}/he_ring.toml"], "poly_modulus_degree"),
    "two aggregation rules swept": (["harden", "--federated", "--defense", "krum,median", "--param", "f=0,1"],
                                    "not both"),
    # from a hostile-user probe: each of these was an internal error (exit 3) before
    "audit.toml nested 3000 levels": (["audit", "--config", "{d}/deep.toml"], "nested more than 64 levels"),
    "audit.toml tables nested 3000 levels": (["audit", "--config", "{d}/deep_table.toml"], "nested more than 64"),
    "CSV of only a label column": (["audit", "--model", "{sd}", *MLP, "--data", "{d}/label_only.csv"],
                                   "the only column is the label column"),
    "100000 threads": (["audit", "--threads", "100000"], "audit.threads: Input should be less than or equal to 1024"),
    "unreachable Ray cluster": (["audit", "--model", "{sd}", *MLP, "--data", "digits", "--threats", "fgsm",
                                 "--backend", "ray://127.0.0.1:1"], "no Ray cluster answers there"),
    "scan --json into a folder": (["scan", "{sd}", "--json", "{d}/a_folder"], "--json {d}/a_folder: is a folder"),
    "diff --markdown into a folder": (["diff", "{d}/nope1", "{d}/nope2", "--markdown", "{d}/a_folder"],
                                      "--markdown {d}/a_folder: is a folder"),
    "diff --json under a file": (["diff", "{d}/nope1", "{d}/nope2", "--json", "{d}/a_file/d.json"], "not a folder"),
}


def run(argv, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["mlwarden", *map(str, argv)])
    with pytest.raises(SystemExit) as e:
        cli.entry()
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2(case, files, mlp_state_dict, tmp_path, monkeypatch, capsys):
    args, expected = CASES[case]
    args = [a.format(d=files, sd=mlp_state_dict) for a in args]
    expected = expected.format(d=files)
    out = ["--out", tmp_path / "run"] if args[0] in ("audit", "harden") and "--out" not in args else []
    code, err = run([*args, *out], monkeypatch, capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, (code, err[-2000:])
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "run" / "report.json").exists() and not (tmp_path / "run" / "harden.json").exists()


def test_an_internal_bug_exits_3_and_says_where_the_traceback_is(monkeypatch, capsys):
    import mlwarden.core.catalogue as catalogue

    def broken(group):
        raise RuntimeError("boom")
    monkeypatch.setattr(catalogue, "describe", broken)
    code, err = run(["defenses"], monkeypatch, capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 3 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("internal error: RuntimeError: boom") and "bug in mlwarden" in lines[0]
    path = lines[0].split("traceback in ")[1].split(" and the command")[0]
    text = open(path, encoding="utf-8").read()
    assert "Traceback" in text and "boom" in text and "command: mlwarden defenses" in text


def test_json_written_is_strict_even_with_infinite_numbers(tmp_path):
    """Python writes inf as `Infinity`, which strict JSON parsers reject: every file mlwarden writes says null."""
    import json
    import math

    from mlwarden.core.finding import Finding, Metric, Severity, Status
    from mlwarden.report.report import Report
    f = Finding("t", "fam", "T", Status.OK, Severity.LOW, "h", metrics=[Metric("exposure", math.inf, 10),
                                                                       Metric("ratio", float("nan"))])
    from mlwarden.audit.rundir import RunDir, claim
    claim(tmp_path, resume=False, fingerprint="")      # `mlwarden report` re-renders only in a run directory
    paths = Report(subject={"model": {}, "data": {}}, findings=[f], settings={}).save(tmp_path)
    RunDir(tmp_path, {"fingerprint": "test"}).add(*paths.values())

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    rep = strict(paths["report.json"].read_text())
    strict(paths["report.sarif"].read_text())
    assert [m["value"] for m in rep["findings"][0]["metrics"]] == [None, None]
    # and the report renders again from that JSON (mlwarden report), the missing numbers shown as such
    import subprocess
    r = subprocess.run([sys.executable, "-m", "mlwarden", "report", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "n/a (not a finite number)" in (tmp_path / "report.md").read_text()


def test_a_csv_header_with_a_byte_order_mark_reads_as_written(files):
    """Excel writes a UTF-8 byte-order mark before the first column name; it is not part of the name."""
    from mlwarden.io.datasets import load_data
    data = load_data(str(files / "bom.csv"), label_column="label")
    assert data.n_classes == 2 and data.input_shape == (2,) and len(data.x_train) + len(data.x_test) == 40


def test_threats_list_is_readable_at_80_columns():
    import os
    import subprocess

    from mlwarden.core.registry import all_threats
    r = subprocess.run([sys.executable, "-m", "mlwarden", "threats"], capture_output=True, text=True,
                       env=dict(os.environ, COLUMNS="80"))
    assert r.returncode == 0 and max(len(line) for line in r.stdout.splitlines()) <= 80
    assert all(f"{name}  " in r.stdout for name in all_threats())    # every name whole, none cut with '…'


def test_report_md_shows_html_in_names_as_text(tmp_path):
    from mlwarden.core.finding import Finding, Severity, Status
    from mlwarden.report.report import Report
    f = Finding("t", "fam", "<img src=x onerror=alert(1)>", Status.OK, Severity.LOW, "<b>bold</b> | pipe")
    Report(subject={"model": {"name": "<script>alert(1)</script>"}, "data": {"name": "d"}}, findings=[f],
           settings={}).save(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "<script>" not in md and "<img" not in md and "<b>" not in md
    assert "&lt;script&gt;" in md


def test_exit_1_means_only_a_finding_at_or_above_fail_on():
    from mlwarden.core.finding import Finding, Severity, Status
    from mlwarden.report.report import Report

    def rep(*findings):
        return Report(subject={"model": {}, "data": {}}, findings=list(findings), settings={})
    high = Finding("a", "f", "A", Status.OK, Severity.HIGH, "h")
    crashed = Finding("b", "f", "B", Status.FAILED, Severity.INFO, "attack failed: ZeroDivisionError: x")
    slow = Finding("c", "f", "C", Status.FAILED, Severity.INFO, "attack did not finish: time budget of 1s exceeded")
    assert rep(high).exit_code("high") == 1 and rep(high).exit_code("critical") == 0
    assert rep(high, crashed).exit_code("high") == 1                   # the finding decides
    assert rep(crashed).exit_code(None) == 3 and rep(crashed).exit_code("critical") == 3   # a bug is not a finding
    assert rep(slow).exit_code(None) == 0 and rep(slow).exit_code("low") == 3   # the gate cannot vouch for it


def test_a_list_parameter_takes_every_value_instead_of_sweeping():
    from mlwarden.harden.run import parse_defenses
    (d, ov), = parse_defenses("randomized-smoothing", ["radii=0,0.25,0.5"])[0]
    assert parse_defenses("randomized-smoothing", ["radii=0,0.25,0.5"])[1] is None     # not a sweep
    assert d.params_for("quick", ov).radii == [0.0, 0.25, 0.5]


def test_sms_spam_without_the_internet_says_where_to_put_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLWARDEN_CACHE", str(tmp_path / "empty-cache"))
    code, err = run(["audit", "--data", "sms-spam", "--out", tmp_path / "run"], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "cannot download the SMS Spam Collection" in lines[0] and "place the file SMSSpamCollection" in lines[0]
    assert str(tmp_path / "empty-cache" / "data" / "sms-spam" / "SMSSpamCollection") in lines[0]


def test_a_tampered_sms_spam_file_in_the_cache_is_refused(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c" / "data" / "sms-spam" / "SMSSpamCollection"
    path.parent.mkdir(parents=True)
    path.write_text("ham\thello\nspam\twin\n" * 10)
    monkeypatch.setenv("MLWARDEN_CACHE", str(tmp_path / "c"))
    code, err = run(["audit", "--data", "sms-spam", "--out", tmp_path / "run"], monkeypatch, capsys)
    assert code == 2 and "checksum mismatch" in err and len(err.strip().splitlines()) == 1, err


# -- a report.json someone edited: `mlwarden report`, `mlwarden diff` and `--baseline` read it through one
# validator (report/load.py); every tampering is one line and exit 2, never a crash mid-render (exit 3) or a
# diff that goes on with nonsense (exit 0 or 1)
def _valid_report() -> dict:
    from mlwarden.core.finding import Check, Finding, Metric, Remedy, Severity, Status
    from mlwarden.report.report import Report
    f = Finding("fgsm", "model-tricking", "FGSM", Status.OK, Severity.HIGH, "accuracy 97% -> 35%",
                metrics=[Metric.rate("clean_accuracy", 194, 200), Metric.rate("robust_accuracy", 71, 200)],
                checks=[Check("zero-gradient", False, "0 of 195 points")], remedy=Remedy("adversarial-training", "AT"),
                atlas=["AML.T0043"], params={"eps": 0.1}, details={"table": [{"eps": 0.1, "acc": 0.35}], "notes": ["n"]})
    subject = {"model": {"name": "mlp.pt", "kind": "torch", "access": "white-box", "n_classes": 10},
               "data": {"name": "digits", "input_shape": [1, 8, 8], "n_test": 450}, "input_space": "[0, 1]"}
    return Report(subject=subject, findings=[f], settings={"profile": "quick", "seed": 0, "fail_on": None}).to_dict()


def _metric(r):
    return r["findings"][0]["metrics"][1]


TAMPERED = {   # name: a change to a valid report (or the text of report.json itself)
    "findings an object": lambda r: r.update(findings={"fgsm": r["findings"][0]}),
    "no findings key": lambda r: r.pop("findings"),
    "subject a list": lambda r: r.update(subject=[1, 2]),
    "subject.model a string": lambda r: r["subject"].update(model="mlp"),
    "settings a list": lambda r: r.update(settings=["quick"]),
    "settings.fail_on unknown": lambda r: r["settings"].update(fail_on="sometimes"),
    "seconds a string": lambda r: r.update(seconds="fast"),
    "seconds a 400-digit number": lambda r: r.update(seconds=10 ** 400),
    "created a number": lambda r: r.update(created=5),
    "a finding a list": lambda r: r["findings"].__setitem__(0, ["fgsm"]),
    "a finding without status": lambda r: r["findings"][0].pop("status"),
    "severity a number": lambda r: r["findings"][0].update(severity=3),
    "a finding with an unknown key": lambda r: r["findings"][0].update(colour="red"),
    "metric value a string": lambda r: _metric(r).update(value="high"),
    "metric value a 400-digit number": lambda r: _metric(r).update(value=10 ** 400),
    "metric value NaN": lambda r: _metric(r).update(value=float("nan")),
    "a rate of 7.5": lambda r: _metric(r).update(value=7.5),
    "sample size a string": lambda r: _metric(r).update(n="200"),
    "sample size negative": lambda r: _metric(r).update(n=-3),
    "sample size 10^30": lambda r: _metric(r).update(n=10 ** 30),
    "metric name a list": lambda r: _metric(r).update(name=["robust"]),
    "check fired a string": lambda r: r["findings"][0]["checks"][0].update(fired="no"),
    "remedy a list": lambda r: r["findings"][0].update(remedy=["adversarial-training"]),
    "details.table garbage": lambda r: r["findings"][0]["details"].update(table=[{"a": 1}, 3]),
    "details.headline_metric a list": lambda r: r["findings"][0]["details"].update(headline_metric=["x"]),
    "params a list": lambda r: r["findings"][0].update(params=[0.1]),
    "a threat listed twice": lambda r: r["findings"].append(dict(r["findings"][0])),
    "summary a number": lambda r: r.update(summary=5),
    # the membership records `mlwarden diff` reads (issue 34)
    "details.primary an object": lambda r: r["findings"][0]["details"].update(primary={"x": 1}),
    "details.reference_models a list": lambda r: r["findings"][0]["details"].update(reference_models=["mlp"]),
    "details.reference_models nested": lambda r: r["findings"][0]["details"].update(reference_models={"recipe": [1]}),
    "details.audited_scores a list of numbers": lambda r: r["findings"][0]["details"].update(
        audited_scores={"attack": "lira-online", "members": [0.1, 0.2], "nonmembers": [0.0]}),
    "details.audited_scores not base64": lambda r: r["findings"][0]["details"].update(
        audited_scores={"attack": "lira-online", "members": "!!!!", "nonmembers": "AAAAAA=="}),
    "details.audited_scores over 200,000 scores": lambda r: r["findings"][0]["details"].update(
        audited_scores={"attack": "lira-online", "members": "AAAA" * 300_000, "nonmembers": ""}),
    "a lone surrogate in a string": "SURROGATE",
    "a 5,000-digit number": "HUGE",
    "the document an array": '[{"schema": "mlwarden.report/1"}]',
    "params nested 3000 levels": "NESTED",
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    import copy
    import json
    d = tmp_path_factory.mktemp("reports")
    good = _valid_report()
    (d / "good").mkdir()
    (d / "good" / "report.json").write_text(json.dumps(good))
    for i, (name, change) in enumerate(TAMPERED.items()):
        r = copy.deepcopy(good)
        if callable(change):
            change(r)
            text = json.dumps(r)
        elif change == "SURROGATE":
            r["findings"][0]["headline"] = "@"
            text = json.dumps(r).replace('"@"', '"a\\ud800"')
        elif change == "HUGE":
            text = json.dumps(r)[:-1] + ', "zz": ' + "9" * 5000 + "}"
        elif change == "NESTED":
            r["findings"][0]["params"] = "@"
            text = json.dumps(r).replace('"@"', '{"x": ' + "[" * 3000 + "]" * 3000 + "}")
        else:
            text = change
        (d / f"t{i}").mkdir()
        (d / f"t{i}" / "report.json").write_text(text)
    return d


def _one_line_exit_2(code, err, expected=""):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1, (code, err[-2000:])
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_report_json_is_one_line_exit_2(case, reports, monkeypatch, capsys):
    bad, good = reports / f"t{list(TAMPERED).index(case)}", reports / "good"
    for argv in (["report", bad], ["diff", bad, good, "--fail-on-regression"], ["diff", good, bad]):
        code, err = run(argv, monkeypatch, capsys)
        _one_line_exit_2(code, err, str(bad / "report.json"))
        assert "not an mlwarden report" in err or "not valid JSON" in err, err


def test_the_valid_report_of_the_tampering_tests_reads_and_diffs(reports, monkeypatch, capsys):
    code, err = run(["diff", reports / "good", reports / "good", "--fail-on-regression"], monkeypatch, capsys)
    assert code == 0, err


# -- a watermark registry for verify-copy: every line checked before the models load
REGISTRIES = {
    "a line that is not JSON": ('{"input": [0.5], "label": 1}\n{"input": [0.5\n', "line 2 is not JSON"),
    "a line that is an array": ("[1, 2]\n", "line 1 is not a JSON object"),
    "no input": ('{"label": 1}\n', "'input' must be a non-empty list"),
    "input holding a string": ('{"input": [0.5, "x"], "label": 1}\n', "'input' must be a non-empty list"),
    "label a string": ('{"input": [0.5], "label": "seven"}\n', "'label' must be a class id"),
    "label negative": ('{"input": [0.5], "label": -1}\n', "'label' must be a class id"),
    "rows of two lengths": ('{"input": [0.5], "label": 1}\n{"input": [0.5, 0.5], "label": 1}\n', "holds 2 values"),
    "inputs of another model": ('{"input": [0.5, 0.5], "label": 1}\n', "not this model's registry"),
    "a label beyond the classes": ('{"input": ' + str([0.5] * 64) + ', "label": 12}\n', "not a class of"),
}


@pytest.mark.parametrize("case", list(REGISTRIES))
def test_a_malformed_watermark_registry_is_one_line_exit_2(case, mlp_state_dict, tmp_path, monkeypatch, capsys):
    text, expected = REGISTRIES[case]
    (tmp_path / "registry.jsonl").write_text(text)
    code, err = run(["verify-copy", "--registry", tmp_path / "registry.jsonl", "--model", mlp_state_dict,
                     "--factory", "mlwarden.core.zoo:mlp", "--suspect", mlp_state_dict], monkeypatch, capsys)
    _one_line_exit_2(code, err, expected)


# -- an audited endpoint's answers are trusted for nothing (io/http_target.py)
ANSWERS = {   # the body a prediction API (MLflow's /invocations shape) answers, and the error it must give
    "nested 3000 levels": ("[" * 3000 + "]" * 3000, "cannot read the answer"),
    "an object where rows go": ('{"predictions": {"a": 1}}', "cannot read the answer"),
    "two rows for one": ('{"predictions": [[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]]}', "1 rows were sent"),
    "strings for scores": ('{"predictions": [["a", "b", "c"]]}', "cannot read the answer"),
    "NaN scores": ('{"predictions": [[NaN, 0.5, 0.5]]}', "answered NaN or infinite scores"),
    "infinite scores": ('{"predictions": [[Infinity, 0.5, 0.5]]}', "answered NaN or infinite scores"),
}


@pytest.fixture(scope="module")
def answering():
    """A local prediction API that answers POST /NAME/invocations with ANSWERS[NAME]."""
    import http.server
    import threading
    from urllib.parse import unquote

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = ANSWERS[unquote(self.path.split("/")[1])][0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("case", list(ANSWERS))
def test_an_endpoint_answering_garbage_is_one_line_exit_2(case, answering, tmp_path, monkeypatch, capsys):
    code, err = run(["audit", "--endpoint", f"{answering}/{case}/invocations", "--data", "iris", "--threats",
                     "square", "--out", tmp_path / "run"], monkeypatch, capsys)
    _one_line_exit_2(code, err, ANSWERS[case][1])
    assert not (tmp_path / "run" / "report.json").exists()


# -- hangs: a server that sends one byte a second, and named pipes where files go
@pytest.fixture(scope="module")
def dripping():
    """A server that answers every request one byte a second, status line and headers included: each read
    is quick, so only a deadline on the whole exchange ends it."""
    import socket
    import threading
    import time
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def answer(conn):
        try:
            conn.recv(65536)
            body = b'{"predictions": [[0.2, 0.3, 0.5]]}'
            msg = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            for i in range(len(msg)):
                conn.sendall(msg[i:i + 1])
                time.sleep(1.0)
        except OSError:
            pass
        finally:
            conn.close()

    def accept():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.mark.parametrize("what", ["baseline URL", "audited endpoint"])
def test_a_server_dripping_one_byte_a_second_meets_the_deadline(what, dripping, reports, tmp_path):
    import os
    import subprocess
    argv = (["diff", f"{dripping}/report.json", reports / "good"] if what == "baseline URL" else
            ["audit", "--endpoint", f"{dripping}/invocations", "--data", "iris", "--out", tmp_path / "run"])
    r = subprocess.run([sys.executable, "-m", "mlwarden", *map(str, argv)], capture_output=True, text=True,
                       timeout=90, env=dict(os.environ, MLWARDEN_HTTP_DEADLINE="3", OMP_NUM_THREADS="1"))
    _one_line_exit_2(r.returncode, r.stderr, "no complete answer within 3 s")


@pytest.fixture
def bounded():
    """In-process calls that would wait on a pipe forever fail the test after 30 s instead (SIGALRM interrupts
    the blocked open)."""
    import signal

    def stuck(*_):
        raise TimeoutError("blocked on a named pipe")
    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


PIPES = {   # every option that names a file to read or write, given a named pipe
    "--config": ["audit", "--config", "{p}"],
    "--data (.npz)": ["audit", "--model", "{sd}", *MLP, "--data", "{p}.npz"],
    "--data (.txt)": ["audit", "--model", "{sd}", *MLP, "--data", "{p}.txt"],
    "--model": ["audit", "--model", "{p}", "--data", "digits"],
    "--baseline": ["audit", "--threats", "fgsm", "--baseline", "{p}"],
    "--query-log": ["serve", "--query-log", "{p}"],
    "--api-key-file": ["serve", "--api-key-file", "{p}"],
    "--watermark-key-file": ["serve", "--watermark-key-file", "{p}"],
    "--watermark-registry": ["serve", "--watermark-key", "k", "--watermark-registry", "{p}"],
    "verify-copy --registry": ["verify-copy", "--registry", "{p}", "--model", "{sd}", "--suspect", "{sd}"],
    "scan FILE": ["scan", "{p}"],
    "scan --json": ["scan", "{sd}", "--json", "{p}"],
    "diff --markdown": ["diff", "{sd}", "{sd}", "--markdown", "{p}"],
    "diff OLD": ["diff", "{p}", "{sd}"],
    "report": ["report", "{p}"],
}


@pytest.mark.parametrize("case", list(PIPES))
def test_a_named_pipe_for_a_path_option_is_refused_unopened(case, mlp_state_dict, tmp_path, monkeypatch, capsys,
                                                            bounded):
    import os
    for suffix in ("", ".npz", ".txt"):
        os.mkfifo(tmp_path / f"pipe{suffix}")
    argv = [a.format(p=tmp_path / "pipe", sd=mlp_state_dict) for a in PIPES[case]]
    code, err = run([*argv, *(["--out", tmp_path / "run"] if argv[0] == "audit" else [])], monkeypatch, capsys)
    _one_line_exit_2(code, err, "is a named pipe")


def test_ctrl_c_mid_audit_exits_130_with_one_line(mlp_state_dict, tmp_path):
    """SIGINT while an attack runs (its progress spinner on screen): exit 130 and the line that says how to
    resume, never exit 0 or a traceback."""
    import os
    import signal
    import subprocess
    import threading
    import time
    (tmp_path / "slow.toml").write_text("[threats.hopskipjump]\nn_samples = 100\nmax_iter = 60\nstop_at_eps = false\n")
    p = subprocess.Popen([sys.executable, "-m", "mlwarden", "audit", "--model", str(mlp_state_dict), *MLP, "--data",
                          "digits", "--threats", "fgsm,hopskipjump", "--config", str(tmp_path / "slow.toml"), "--out",
                          str(tmp_path / "run")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200"))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any(ln.startswith("[1/2] fgsm") for ln in lines) and time.monotonic() < deadline:
        assert p.poll() is None, "".join(lines)
        time.sleep(0.1)
    time.sleep(1.0)   # hopskipjump is running now
    assert p.poll() is None, "the audit finished before it could be interrupted"
    p.send_signal(signal.SIGINT)
    p.wait(60)
    reader.join(10)
    err = "".join(lines)
    assert p.returncode == 130 and "Traceback" not in err, (p.returncode, err[-2000:])
    assert err.strip().splitlines()[-1].startswith("interrupted: finished findings are kept"), err[-2000:]
    assert (tmp_path / "run" / "findings" / "fgsm.json").exists() and not (tmp_path / "run" / "report.json").exists()
