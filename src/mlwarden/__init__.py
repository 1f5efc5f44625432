"""mlwarden: audit machine-learning models for security and privacy weaknesses, and harden them."""
__version__ = "0.1.0"

from .api import audit  # noqa: E402
from .report.report import Report  # noqa: E402

__all__ = ["audit", "Report", "__version__"]
