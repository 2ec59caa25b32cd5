"""One generic registry backs every extension point (model sources, criteria, strategies, ...)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from slimcnn.errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map with strict duplicates and helpful unknown-name errors.

    Example:
        >>> criteria: Registry[Callable] = Registry("criterion")
        >>> @criteria.register("l1")
        ... def l1(w): ...
        >>> criteria.get("l1") is l1
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate raises unless ``override``."""

        def deco(obj: T) -> T:
            self.add(name, obj, override=override)
            return obj

        return deco

    def add(self, name: str, obj: T, *, override: bool = False) -> None:
        """Register ``obj`` under ``name``."""
        if name in self._items and not override:
            raise ValueError(f"{self.kind} '{name}' is already registered; pass override=True to replace it")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """Look ``name`` up, raising :class:`~slimcnn.errors.UnknownNameError` with close matches."""
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._items) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching an fnmatch ``pattern``, sorted."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
