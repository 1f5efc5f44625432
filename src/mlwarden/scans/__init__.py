"""Backdoor scans that threats and defences share: STRIP's superimposition entropy (an input-time
detector: the backdoor threat measures it, `mlwarden serve --strip` guards with it) and Neural Cleanse's
trigger reversal (the neural-cleanse threat scans with it, the unlearning defence removes what it finds)."""
