"""The contract (common.py) on image networks (kinds.py IMAGE)."""
from .common import contract_tests
from .kinds import IMAGE

globals().update(contract_tests(IMAGE, "image"))
