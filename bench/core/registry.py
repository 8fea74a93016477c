"""Name -> plug-in registries, and the one plug-in loader.

A plug-in registers itself at import time with ``@REGISTRY.register("name")``. A registry that
is given a ``builtin`` package and an entry-point ``group`` loads its plug-ins lazily, the first
time it is read (``get``, ``names``, ``items``, ``in``):

1. the project's own package (``defenses`` / ``attacks``), whose ``__init__`` imports every
   module it contains, so dropping a file in is enough to add a plug-in;
2. every installed distribution's entry points in ``group`` (``dbp_bench.defenses`` /
   ``dbp_bench.attacks``): a third-party package registers its plug-ins by being installed,
   the lm-eval / HELM convention.

So ``bench.harness.runner.start_run`` called as a library sees the same registries as the CLI,
and no core module imports a plug-in package. Duplicate names are an error naming both owners.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import logging
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from bench.core.errors import PluginError, UnknownNameError

T = TypeVar("T")
log = logging.getLogger(__name__)


class Registry(Generic[T]):
    """A typed mapping from plug-in names to classes, with helpful lookup errors."""

    def __init__(self, kind: str, builtin: str | None = None, group: str | None = None) -> None:
        self.kind = kind
        self.builtin = builtin
        self.group = group
        self._entries: dict[str, T] = {}
        self._loaded = builtin is None and group is None
        self._source = "<direct>"

    # -- registration -----------------------------------------------------------------------
    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; duplicate names are an error."""

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise PluginError(
                    f"{self.kind} {name!r} is already registered by {self._entries[name]!r}; "
                    f"cannot register {obj!r} (from {self._source}) under the same name"
                )
            self._entries[name] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests that register temporary plug-ins)."""
        self._entries.pop(name, None)

    # -- loading ----------------------------------------------------------------------------
    def load(self) -> None:
        """Import the built-in plug-in package and every entry point of ``group`` (once)."""
        if self._loaded:
            return
        self._loaded = True  # set first: plug-in modules may read the registry while importing
        if self.builtin:
            self._import(self.builtin, f"package {self.builtin!r}")
        if self.group:
            for entry in metadata.entry_points(group=self.group):
                self._import(entry.value, f"entry point {entry.name!r} of {entry.dist.name if entry.dist else '?'}")

    def _import(self, target: str, source: str) -> None:
        module, _, attribute = target.partition(":")
        self._source = source
        try:
            loaded = importlib.import_module(module)
            if attribute:
                getattr(loaded, attribute)
        except PluginError:
            raise
        except Exception as err:
            raise PluginError(f"{self.kind} plug-ins from {source} ({target}) failed to import: "
                              f"{type(err).__name__}: {err}") from err
        finally:
            self._source = "<direct>"
        log.debug("loaded %s plug-ins from %s", self.kind, source)

    # -- lookup -----------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """Return the plug-in called ``name``; unknown names raise with suggestions."""
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        self.load()
        folded = {entry.casefold(): entry for entry in self._entries}
        close = ([folded[name.casefold()]] if name.casefold() in folded else
                 [folded[c] for c in difflib.get_close_matches(name.casefold(), list(folded), n=3, cutoff=0.5)])
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        valid = ", ".join(self.names()) or "(none registered)"
        return f"Unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {valid}."

    def names(self, pattern: str = "*") -> list[str]:
        self.load()
        return sorted(fnmatch.filter(self._entries, pattern))

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self._entries[name]

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries
