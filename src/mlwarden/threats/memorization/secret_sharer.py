"""The Secret Sharer test (Carlini et al. 2019, "The Secret Sharer: Evaluating and Testing Unintended
Memorization in Neural Networks"): train a model like the subject's, through its recipe, on its text
with canaries inserted 0, 1, 4, 16... times; measure each canary's exposure and try to extract it from
its prefix alone. A canary with 0 insertions is the control: its exposure must look like chance."""
from __future__ import annotations

from dataclasses import asdict

import math
import re
from collections import Counter

from pydantic import Field

from ...core.finding import Check, Metric, Severity, Status
from ...core.severity import secret_exposure
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from ...privacy.fix import DP_SGD
from ...plots import exposure_curve
from .canaries import insert, make_canaries
from .exposure import estimated_exposure, exact_exposure
from .extraction import extract

CONTROL_MAX_BITS = 8.0  # a never-inserted canary above this means the test itself is broken
SECRET_LIKE = re.compile(r"\d{6,}|[\w.+-]+@[\w-]+\.[\w.]+")


class Sp(Params):
    insertions: list[int] = Field(default_factory=lambda: [0, 1, 4, 16], description="0 is the control")
    digits: int = Field(6, ge=2, le=12, description="secret length; |R| = 10**digits")
    max_enumerate: int = Field(10**6, description="enumerate R exactly up to this size, else estimate")
    samples: int = Field(5000, ge=100, description="candidates for the skew-normal estimate")
    max_queries: int = Field(20_000, ge=10, description="budget of the extraction search per canary")


def repeated_secrets(text: str) -> dict[str, int]:
    """Secret-like strings (long digit runs, e-mail addresses) that occur more than once."""
    counts = Counter(SECRET_LIKE.findall(text))
    return {s: k for s, k in counts.most_common(20) if k > 1}


@register
class SecretSharer(Threat):
    """Canary exposure and secret extraction for generative text models (Carlini et al. 2019)."""
    name = "secret-sharer"
    family = "data-extraction"
    title = "Unintended memorization (canary exposure and secret extraction)"
    needs = Access.SCORES
    modalities = ("text",)
    atlas = ["AML.T0024.001", "AML.T0057"]
    Params = Sp
    profiles = {"quick": {"insertions": [0, 1, 4, 16]}, "standard": {"insertions": [0, 1, 2, 4, 8, 16]},
                "thorough": {"insertions": [0, 1, 2, 4, 8, 16, 32], "samples": 20000}}
    remedy = DP_SGD

    def skip_reason(self, ctx: Context) -> str | None:
        if ctx.recipe is None:
            return "needs the subject's training recipe (model.recipe) to train a model with canaries"
        if getattr(ctx.data, "corpus", None) is None:
            return "applies to text corpora (character language models)"
        return super().skip_reason(ctx)

    def run(self, ctx: Context, p: Sp):
        corpus = ctx.data.corpus
        canaries = make_canaries(list(p.insertions), p.digits, ctx.seed)
        text = insert(corpus.train, canaries, ctx.seed)
        data = corpus.dataset(ctx.data.name, text)
        model = ctx.recipe.fit(data.x_train, data.y_train, data.n_classes, seed=ctx.seed)
        wrap = ctx.recipe.wrap
        size = 10 ** p.digits
        rows, queries = [], 0
        for c in canaries:
            ctx.check_time()
            if size <= p.max_enumerate:
                exposure, rank = exact_exposure(model, corpus, c.prefix, c.secret)
                how = "exact"
            else:
                exposure = estimated_exposure(model, corpus, c.prefix, c.secret, p.samples, ctx.seed)
                rank, how = None, "estimate"
            ex = extract(model, corpus, c.prefix, c.secret, p.max_queries)
            queries += ex.queries
            rows.append({"canary": c.prefix + "*" * p.digits, "insertions": c.insertions, "exposure_bits": exposure,
                         "rank": rank, "method": how, "candidates_compared": size if how == "exact" else p.samples,
                         "extracted": ex.extracted, "extraction_queries": ex.queries,
                         "best_guess_matches": ex.best_guess == c.secret})
        return self._finding(ctx, p, rows, size, corpus, queries, wrap)

    def _finding(self, ctx, p, rows, size, corpus, queries, wrap):
        max_bits = math.log2(size)
        checks = []
        control = [r for r in rows if r["insertions"] == 0]
        for r in control:
            checks.append(Check("control-canary-at-chance", r["exposure_bits"] > CONTROL_MAX_BITS,
                                f"a canary never inserted has exposure {r['exposure_bits']:.1f} bits (chance is "
                                f"about 1.4); above {CONTROL_MAX_BITS:g} the measurement is not trustworthy"))
        exact_vs_search = [r for r in rows if r["rank"] is not None and (r["rank"] == 1) != r["best_guess_matches"]]
        checks.append(Check("search-agrees-with-enumeration", bool(exact_vs_search),
                            "the extraction search's best guess must be the rank-1 candidate of the enumeration"))
        repeated = repeated_secrets(corpus.train)
        checks_info = {"repeated_secret_like_strings": repeated}
        fired = any(c.fired for c in checks)
        metrics = [Metric(f"exposure, {r['insertions']} insertions", r["exposure_bits"], None, unit="bits",
                          reliable=not fired) for r in rows]
        inserted = [r for r in rows if r["insertions"] > 0]
        extracted = [r for r in inserted if r["extracted"]]
        metrics.append(Metric.rate("canaries extracted", len(extracted), len(inserted), reliable=not fired))
        path = ctx.evidence_path("exposure.png")
        exposure_curve(path, [r["insertions"] for r in rows], [r["exposure_bits"] for r in rows], max_bits,
                       [r["extracted"] for r in rows], title=f"|R| = 10^{p.digits}")
        top = max((r["exposure_bits"] for r in inserted), default=0.0)
        if extracted:
            sev = Severity.CRITICAL
            least = min(r["insertions"] for r in extracted)
            head = (f"secret extracted from its prefix alone when inserted {least}x "
                    f"({extracted[0]['extraction_queries']} queries); exposure up to {top:.1f} of {max_bits:.1f} bits")
        else:
            sev = secret_exposure(max_bits).grade(top)
            head = f"no canary extracted; highest exposure {top:.1f} of {max_bits:.1f} bits"
        calibration = getattr(wrap, "calibration", None) if wrap is not None else None
        dp = asdict(calibration) if calibration is not None else None
        notes = ["Unit of privacy: one training example, which for this model is one window of "
                 f"{corpus.context} characters plus the next one; a canary of {len(rows[0]['canary'])} characters "
                 f"inserted k times is in about k * {len(rows[0]['canary']) + corpus.context} windows."]
        if dp:
            multi = [r for r in inserted if r["insertions"] > 1]
            notes.append(f"Trained with DP-SGD at epsilon {dp['target_epsilon']:g}: that bounds what one window "
                         f"leaks. Secrets repeated in many windows ({', '.join(str(r['insertions']) + 'x' for r in multi)}) "
                         "are protected only at group level (k windows: about k * epsilon), which is no protection; "
                         "deduplicate secrets or train at the user level.")
            if any(r["extracted"] or r["exposure_bits"] >= 10 for r in multi):
                head += "; DP-SGD does not protect secrets repeated in the data (group privacy)"
        if repeated:
            notes.append(f"{len(repeated)} secret-like strings occur more than once in the training text; DP "
                         "protects each occurrence, not the secret: " + ", ".join(f"{s!r} x{k}" for s, k in list(repeated.items())[:5]))
        if fired:
            head = "unreliable: " + head
        return self.finding(ctx, p, status=Status.UNRELIABLE if fired else Status.OK,
                            severity=Severity.INFO if fired else sev, headline=head, metrics=metrics, checks=checks,
                            evidence=[ctx.rel(path)], queries=queries,
                            details={"table": rows, "secret_space": size, "notes": notes, **checks_info,
                                     "dp": dp})
