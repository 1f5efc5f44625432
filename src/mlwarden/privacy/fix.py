"""The fix the data-extraction findings recommend."""
from ..core.finding import Remedy

DP_SGD = Remedy(
    "differential privacy (DP-SGD)",
    "Retrain with DP-SGD (Abadi et al. 2016) at a target epsilon; the harden command retrains through the "
    "recipe, re-runs this audit and shows the accuracy it cost. DP bounds what one training example leaks; "
    "a record repeated k times is protected only at group level (about k * epsilon).",
    "mlwarden harden --defense dp-sgd --param epsilon=8",
)
