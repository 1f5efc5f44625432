"""JUnit XML: one test case per threat; a finding at or above the run's `--fail-on` level is a failure, so the
failures are exactly the findings that make the run exit 1 (with no `--fail-on`, none: every finding's
severity and headline are in its test case's system-out). A threat that crashed is an error (exit 3), and so
is any threat that did not finish under --fail-on (exit 3: the gate cannot vouch for it); without --fail-on a
threat that did not finish for another reason (out of time, its own settings refused) is skipped (the run
exits 0), as Report.exit_code counts them."""
from __future__ import annotations

from xml.etree import ElementTree as ET

from ..core.finding import Severity, Status


def render(report) -> str:
    fail_on = report.settings.get("fail_on")
    limit = Severity(fail_on).rank if fail_on else None
    suite = ET.Element("testsuite", name="mlwarden", tests=str(len(report.findings)), time=f"{report.seconds:.2f}")
    failures = errors = skipped = 0
    for f in report.findings:
        case = ET.SubElement(suite, "testcase", classname=f"mlwarden.{f.family}", name=f.threat,
                             time=f"{f.seconds:.2f}")
        if f.status is Status.SKIPPED:
            ET.SubElement(case, "skipped", message=f.headline)
            skipped += 1
        elif f.status is Status.FAILED and limit is None and not f.headline.startswith("attack failed"):
            # did not finish (out of time, or refused its own settings) with no gate to vouch for: exit 0
            ET.SubElement(case, "skipped", message=f"{f.grade}: {f.headline}")
            skipped += 1
        elif f.status is Status.FAILED:   # a crash, or anything unfinished under --fail-on: exit 3 (Report.exit_code)
            ET.SubElement(case, "error", message=f.headline).text = f.error
            errors += 1
        elif limit is not None and f.severity.rank >= limit:
            ET.SubElement(case, "failure", message=f"{f.severity.value}: {f.headline}",
                          type=f.severity.value).text = "\n".join(f"{m.name}: {m.text()}" for m in f.metrics)
            failures += 1
        else:
            ET.SubElement(case, "system-out").text = "\n".join([f"{f.severity.value}: {f.headline}",
                                                                *(f"{m.name}: {m.text()}" for m in f.metrics)])
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
