"""The registries of threats and defences. Nothing is imported from here: built-in and third-party
plug-ins alike are found through Python entry points (groups `mlwarden.threats` and
`mlwarden.defenses`), so core depends on no plug-in and a user's package adds one the same way.

An entry point may name a module (importing it registers its classes with `@register`, and its
`ORDER` list, if any, sets the listing order) or a Threat/Defense class (registered on load)."""
from __future__ import annotations

from importlib.metadata import entry_points
from types import ModuleType
from typing import Generic, TypeVar

from .defense import Defense
from .errors import UserError
from .threat import Threat

T = TypeVar("T", Threat, Defense)


class Registry(Generic[T]):
    def __init__(self, group: str, base: type):
        self.group, self.base = group, base
        self._items: dict[str, T] = {}
        self._order: list[str] = []
        self._loaded = False

    def register(self, cls: type[T]) -> type[T]:
        if cls.name in self._items:
            if type(self._items[cls.name]) is cls:
                return cls
            raise UserError(f"{self.group}: two plug-ins are named '{cls.name}' ({cls.__module__} and "
                            f"{type(self._items[cls.name]).__module__})")
        self._items[cls.name] = cls()
        return cls

    def _discover(self) -> None:
        if self._loaded:
            return
        for ep in sorted(entry_points(group=self.group), key=lambda e: (e.value.split(".")[0] != "mlwarden", e.name)):
            try:
                obj = ep.load()
            except Exception as e:  # noqa: BLE001 - a broken plug-in is named, not a traceback
                raise UserError(f"plug-in '{ep.name}' ({ep.value}) in entry-point group {self.group} failed to "
                                f"load: {type(e).__name__}: {e}") from None
            if isinstance(obj, ModuleType):
                self._order += [n for n in getattr(obj, "ORDER", []) if n not in self._order]
            elif isinstance(obj, type) and issubclass(obj, self.base):
                self.register(obj)
            else:
                raise UserError(f"plug-in '{ep.name}' ({ep.value}) is neither a module nor a "
                                f"{self.base.__name__} class")
        self._loaded = True   # only once every plug-in loaded: a failure is reported again, not half-listed

    def all(self) -> dict[str, T]:
        self._discover()
        rank = {n: i for i, n in enumerate(self._order)}
        return dict(sorted(self._items.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


THREATS: Registry[Threat] = Registry("mlwarden.threats", Threat)
DEFENSES: Registry[Defense] = Registry("mlwarden.defenses", Defense)


def register(cls):
    """Class decorator: registers a Threat or a Defense under its `name`."""
    (DEFENSES if issubclass(cls, Defense) else THREATS).register(cls)
    return cls


def all_threats() -> dict[str, Threat]:
    return THREATS.all()


def all_defenses() -> dict[str, Defense]:
    return DEFENSES.all()


def get_threats(names: list[str] | None) -> list[Threat]:
    """Threats by name or family name; the default audit's threats when `names` is empty."""
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


def get_defense(name: str) -> Defense:
    defenses = all_defenses()
    if name not in defenses:
        raise UserError(f"unknown defence '{name}'; run 'mlwarden defenses' to list them "
                        f"({', '.join(defenses) or 'none installed'})")
    return defenses[name]
