"""A name -> object registry whose lookups fail with the bad name and the valid choices."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # what a name names, for messages: "mask criterion", "architecture", ...
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``."""
        return lambda item: self.add(name, item)

    def names(self) -> list[str]:
        return list(self._items)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; valid choices: {', '.join(self._items)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items
