"""A small name -> object registry, keyed by the names that YAML configs use."""

from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

from kerastl.errors import KerastlError

T = TypeVar("T")


def _normalize(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


class Registry(Generic[T]):
    """Maps names to objects; lookup ignores case, `_` and `-`.

    Example:
        >>> AUGMENTATIONS = Registry("augmentation")
        >>> @AUGMENTATIONS.register("flip")
        ... def make_flip(mode="horizontal"): ...
        >>> AUGMENTATIONS.get("Flip")
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._names: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None):
        """Registers `obj` under `name`; usable as a decorator when `obj` is omitted."""

        def add(item: T) -> T:
            key = _normalize(name)
            if key in self._names:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            self._names[key] = name
            return item

        if obj is None:
            return add
        return add(obj)

    def canonical(self, name: str) -> str:
        """Returns the registered spelling of `name`, or raises a `KerastlError`."""
        key = _normalize(str(name))
        if key not in self._names:
            close = difflib.get_close_matches(
                key, list(self._names), n=3, cutoff=0.6
            )
            hint = (
                f" Did you mean {', '.join(self._names[c] for c in close)}?"
                if close
                else ""
            )
            raise KerastlError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}"
            )
        return self._names[key]

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        return _normalize(str(name)) in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self):
        return self._items.items()

