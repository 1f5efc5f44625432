"""Backends run independent work items (reference models, sweeps, federated clients). `map(fn, items)`
takes a module-level pure function returning a picklable result, so a process pool or a Ray cluster
can run the same items as the local default."""
from __future__ import annotations

from typing import Callable


class LocalBackend:
    """Runs independent work items in this process, in order. The seam where other backends plug in."""

    name = "local"

    def map(self, fn: Callable, items: list) -> list:
        return [fn(i) for i in items]
