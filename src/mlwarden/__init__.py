"""mlwarden: audit machine-learning models for security and privacy weaknesses, and harden them.

The package imports nothing heavy on its own: `mlwarden.audit`, `mlwarden.harden` and `mlwarden.Report` load
torch, scipy and the threat catalogue on first use, so the CLI reads its arguments (and `mlwarden scan`,
`--help` and `--version` finish) without them."""
import sys
import types

from ._version import __version__

__all__ = ["audit", "harden", "Report", "__version__"]


def _api(name):
    """A property that is the API function `name`; setting it (the import system does, for the subpackage
    of the same name) is ignored."""
    def get(self):
        from . import api
        return getattr(api, name)
    return property(get, lambda self, value: None)


class _Package(types.ModuleType):
    """`mlwarden.audit` and `mlwarden.harden` are the API functions, also after `import mlwarden.harden.run`:
    the import system sets a loaded subpackage as an attribute of its parent, and that assignment is ignored
    here (the subpackages stay reachable through sys.modules and `from mlwarden.harden import run`)."""

    audit = _api("audit")
    harden = _api("harden")

    @property
    def Report(self):  # noqa: N802 - the public class name
        from .report.report import Report
        return Report


sys.modules[__name__].__class__ = _Package
