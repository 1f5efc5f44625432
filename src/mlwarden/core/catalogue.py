"""What `mlwarden threats` and `mlwarden defenses` list, without importing torch.

The built-in plug-ins' descriptions (`Threat.describe()`, `Defense.describe()`) are stored in
`catalogue.json` beside this file, written from the live registry by `python -m mlwarden.core.catalogue`; a test
checks that the file equals what the registry describes, so it cannot go stale unnoticed. Listing the
built-ins then reads that file; a third-party plug-in in the same entry-point group is loaded as before (its
module may import what it likes), and so is everything when the file is missing."""
from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

FILE = Path(__file__).with_name("catalogue.json")
GROUPS = ("mlwarden.threats", "mlwarden.defenses")


def _builtin(ep) -> bool:
    return ep.value.split(".")[0] == "mlwarden"


def live(group: str) -> list[dict]:
    """Every registered plug-in of `group`, described, in listing order (imports all of them)."""
    from .registry import all_defenses, all_threats
    items = all_threats() if group == "mlwarden.threats" else all_defenses()
    return [item.describe() for item in items.values()]


def describe(group: str) -> list[dict]:
    """What the listing shows for `group`: the stored built-ins when only built-ins are installed."""
    if any(not _builtin(ep) for ep in entry_points(group=group)) or not FILE.is_file():
        return live(group)
    return json.loads(FILE.read_text(encoding="utf-8"))[group]


def write() -> None:
    FILE.write_text(json.dumps({g: live(g) for g in GROUPS}, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write()
    print(f"wrote {FILE}", file=sys.stderr)
