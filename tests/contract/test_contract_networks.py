"""The contract (common.py) on a tabular network in each file format and behind an endpoint (kinds.py NETWORKS)."""
from .common import contract_tests
from .kinds import NETWORKS

globals().update(contract_tests(NETWORKS, "networks"))
