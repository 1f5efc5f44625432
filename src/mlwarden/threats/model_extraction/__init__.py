"""Model extraction: copying a model through its prediction API."""
