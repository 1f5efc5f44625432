"""mlwarden: audit machine-learning models for security and privacy weaknesses, and harden them."""
from ._version import __version__
from .api import audit, harden
from .report.report import Report

__all__ = ["audit", "harden", "Report", "__version__"]
