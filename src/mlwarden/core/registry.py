"""The threat registry: every threat module registers its Threat here when imported."""
from __future__ import annotations

from .errors import UserError
from .threat import Threat

_THREATS: dict[str, Threat] = {}


def register(cls: type[Threat]) -> type[Threat]:
    if cls.name in _THREATS:
        raise RuntimeError(f"threat {cls.name} registered twice")
    _THREATS[cls.name] = cls()
    return cls


def all_threats() -> dict[str, Threat]:
    from mlwarden.threats import ORDER  # importing registers the built-in threats
    rank = {n: i for i, n in enumerate(ORDER)}
    return dict(sorted(_THREATS.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def get_threats(names: list[str] | None) -> list[Threat]:
    threats = all_threats()
    if not names:
        return [t for t in threats.values() if t.in_default_audit]
    chosen = []
    for n in names:
        if n in threats:
            chosen.append(threats[n])
        else:
            fam = [t for t in threats.values() if t.family == n]
            if not fam:
                raise UserError(f"unknown threat '{n}'; run 'mlwarden threats' to list them")
            chosen.extend(fam)
    seen: dict[str, Threat] = {}
    for t in chosen:
        seen.setdefault(t.name, t)
    return list(seen.values())
