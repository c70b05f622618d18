"""One registry utility for everything pluggable (policies, schedules, metrics, sweeps)."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from packforcing.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object map with did-you-mean errors.

    Register with ``@REG.register("name")``; look up with ``REG.get("name")``. Factories should do
    their heavy imports inside, so that importing a registry stays cheap.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._items), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._items))}."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
