"""Loading user files: models and data. Everything that can go wrong is a UserError."""

# The model formats `--format` names (auto: known by suffix or content). Here, without imports, so the
# configuration validates them without loading torch.
FORMATS = ("auto", "export", "torchscript", "state-dict", "skops", "onnx", "pickle", "xgboost", "lightgbm", "catboost",
           "hf")
