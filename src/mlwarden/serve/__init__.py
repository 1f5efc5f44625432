"""`mlwarden serve`: a model behind guards, speaking the Open Inference Protocol v2."""
