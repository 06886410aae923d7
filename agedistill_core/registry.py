"""One tiny name -> factory registry, used by every pluggable family.

Datasets, detectors, teacher members, students and corruptions each own a
``Registry``.  Adding a new one is one small file that decorates a factory::

    DETECTORS = Registry("detector")

    @DETECTORS.register("ssd")
    def make_ssd(**kwargs): ...

    DETECTORS.create("ssd", confidence=0.5)
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from agedistill_core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named family of factories (or plain objects) looked up by string."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of: {known}"
            ) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered under ``name``."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
