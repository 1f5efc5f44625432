"""The contract (common.py) on scikit-learn estimators and gradient-boosted trees (kinds.py ESTIMATORS)."""
from .common import contract_tests
from .kinds import ESTIMATORS

globals().update(contract_tests(ESTIMATORS, "estimators"))
