"""mlwarden: audit machine-learning models for security and privacy weaknesses, and harden them."""
from ._version import __version__
from . import audit as _audit_package, harden as _harden_package  # noqa: F401  imported first, so that a later
# `import mlwarden.harden.run` cannot rebind `mlwarden.harden` from the function below to the subpackage
from .api import audit, harden
from .report.report import Report

__all__ = ["audit", "harden", "Report", "__version__"]
