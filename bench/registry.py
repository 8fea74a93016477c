"""Name -> plug-in registries for defenses and attacks.

A plug-in registers itself at import time with ``@REGISTRY.register("name")``; the
``defenses`` and ``attacks`` packages import every module they contain, so dropping a
file in is enough to add a plug-in.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bench.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A typed mapping from plug-in names to classes, with helpful lookup errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; duplicate names are an error."""

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by {self._entries[name]!r}; "
                    f"cannot register {obj!r} under the same name"
                )
            self._entries[name] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests that register temporary plug-ins)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """Return the plug-in called ``name``; unknown names raise with suggestions."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        valid = ", ".join(self.names()) or "(none registered)"
        return f"Unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {valid}."

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(fnmatch.filter(self._entries, pattern))

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries
