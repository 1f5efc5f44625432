"""The contract (common.py) on spam filters of labelled messages (kinds.py TEXT)."""
from .common import contract_tests
from .kinds import TEXT

globals().update(contract_tests(TEXT, "text"))
