from .tabular import cancer, wine  # noqa: F401 - the tabular data fixtures of tests/io
