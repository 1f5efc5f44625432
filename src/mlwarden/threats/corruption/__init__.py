"""Model corruption: poisoned training data, backdoors, and poisoned model files (supply chain)."""
