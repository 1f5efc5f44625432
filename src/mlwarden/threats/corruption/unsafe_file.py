"""Unsafe model file: a model file that runs code when loaded is the supply-chain form of model
corruption (MITRE ATLAS AML.T0010 "ML Supply Chain Compromise", AML.T0011.000 "Unsafe ML Artifacts";
the pickle and skops function-reference payloads of e.g. Trail of Bits' "Sleepy Pickle", 2024).

Threat model: the attacker controls the bytes of a model file the user loads (a downloaded checkpoint,
a shared artefact). Needs no access to a running model; reads the file statically (`mlwarden scan`).
An unsafe file is never loaded: the audit writes a report whose one finding is this one, and exits 2.
"""
from __future__ import annotations

from ...core.finding import Finding, Metric, Remedy, Severity, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Params, Threat

NAME = "unsafe-model-file"
FAMILY = "model-corruption"
TITLE = "Code run when the model file is loaded"
ATLAS = ["AML.T0010", "AML.T0011.000"]
REMEDY = Remedy("safe-model-format",
                 "Do not load this file. Ask its author for weights in a format that cannot run code "
                 "(safetensors or a state_dict read with weights_only, ONNX without custom operators, skops "
                 "holding only estimator types) and verify its hash; run `mlwarden scan` on every model file in CI.",
                 "mlwarden scan MODEL_FILE")


def scan_finding(scan: dict, profile: str = "quick", refused: bool = False) -> Finding:
    """The finding for one file scan (the dict of `FileScan.to_dict()`)."""
    refs = scan["references"]
    unsafe = sorted({r["name"] for r in refs if r["verdict"] in ("untrusted", "dangerous")})
    dangerous = sorted({r["name"] for r in refs if r["verdict"] == "dangerous"})
    by_user = sorted({r["name"] for r in refs if r["verdict"] == "trusted-by-user"})
    metrics = [Metric("references", len({r["name"] for r in refs}), unit="names"),
               Metric("untrusted_references", len(unsafe), unit="names"),
               Metric("structural_problems", len(scan["problems"]), unit="problems")]
    if not scan["safe"]:
        severity, status = Severity.CRITICAL, Status.OK
        why = scan["summary"].removeprefix("unsafe: ")
        headline = f"{scan['format']} file {'refused, not loaded' if refused else 'unsafe'}: {why}"
    elif by_user:
        severity, status = Severity.HIGH, Status.OK
        headline = (f"{scan['format']} file loaded only because --trust named {', '.join(by_user[:6])}: "
                    "loading it runs that code")
    else:
        severity, status = Severity.INFO, Status.OK
        headline = f"{scan['format']} file is safe to load ({scan['summary'].removeprefix('safe: ')})"
    return Finding(threat=NAME, family=FAMILY, title=TITLE, status=status, severity=severity, headline=headline,
                   metrics=metrics, atlas=list(ATLAS), profile=profile, remedy=REMEDY if unsafe or by_user else None,
                   details={"file": scan["path"], "format": scan["format"], "untrusted": unsafe,
                            "dangerous": dangerous, "trusted_by_user": by_user, "problems": scan["problems"],
                            "scan_seconds": scan["seconds"]})


@register
class UnsafeModelFile(Threat):
    """Reads the model file statically: what it would import, construct or call on load (pickle, skops,
    TorchScript, torch.export, ONNX, safetensors)."""

    name = NAME
    family = FAMILY
    title = TITLE
    needs = Access.LABELS
    modalities = ("image", "tabular", "text", "messages")
    atlas = ATLAS
    remedy = REMEDY

    def skip_reason(self, ctx: Context) -> str | None:
        if ctx.target.source is None:
            return "the model was not loaded from a file (an endpoint or an object in memory)"
        return super().skip_reason(ctx)

    def run(self, ctx: Context, params: Params) -> Finding:
        """No parameters: the trust list is the user's --trust."""
        return scan_finding(ctx.target.source, ctx.profile)
