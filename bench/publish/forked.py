"""Run one function in a forked child process while the caller goes on (the site build's second core).

A site build holds tens of thousands of records. A forked child inherits them (the parsed records it
checks, or the parsed site inputs when it renders pages) without copying them up front, where a
process pool pickles every argument to its workers (a 10,000-record build's parsed records pickle to
about 200 MB, two seconds each way), so this uses ``multiprocessing``'s ``fork`` context with a
``Process`` (target and arguments are not pickled under fork) and a ``Pipe`` for the child's small
result (error messages, a count). Where fork is not used (not Linux) or there is one CPU, the
function runs inline at :func:`start` and :meth:`Forked.result` returns what it returned: the same
result, only not in parallel.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from bench.core.errors import BenchError

log = logging.getLogger(__name__)

T = TypeVar("T")


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def can_fork() -> bool:
    """Linux with two or more CPUs (macOS can fork, but system frameworks loaded before a fork may
    crash the child, which is why Python stopped forking there by default)."""
    return sys.platform.startswith("linux") and usable_cpus() > 1


@dataclass
class Forked(Generic[T]):
    """A running child (or, without fork, the finished inline call). Call :meth:`result` exactly
    once, or :meth:`cancel`."""

    what: str
    process: Any = None
    connection: Any = None
    inline: tuple[bool, Any] | None = field(default=None, repr=False)

    def result(self) -> T:
        """What the function returned; re-raises what it raised (in the child: the same exception
        when it pickles, else a :class:`BenchError` with the child's traceback)."""
        if self.inline is not None:
            ok, value = self.inline
            if ok:
                return value
            raise value
        try:
            ok, value = self.connection.recv()
        except EOFError:
            self.process.join()
            raise BenchError(f"{self.what}: the child process exited with code {self.process.exitcode} "
                             "before reporting (killed, e.g. out of memory?)") from None
        finally:
            self.connection.close()
        self.process.join()
        if ok:
            return value
        raise value

    def ready(self) -> bool:
        """Whether :meth:`result` would return without waiting (the child has reported or exited)."""
        return self.inline is not None or self.connection.poll()

    def cancel(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join()
        if self.connection is not None:
            self.connection.close()


class WorkCounter:
    """Hands out positions ``0 .. total - 1`` in chunks to whichever process asks next: create it
    before :func:`start` and both the caller and the forked child draw from the same counter (shared
    memory), so work split this way balances itself, whatever each item costs. Each position is
    handed out exactly once."""

    def __init__(self, total: int, chunk: int = 8) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.total = total
        self.chunk = chunk
        self._next = multiprocessing.Value("q", 0)  # a lock-protected int64 in shared memory

    def take(self) -> range:
        """The next chunk of positions (empty once all are handed out)."""
        with self._next.get_lock():
            first = self._next.value
            self._next.value = min(first + self.chunk, self.total)
        return range(first, min(first + self.chunk, self.total))

    def __iter__(self) -> Any:
        """Every position this process is handed, chunk by chunk, until none are left."""
        while chunk := self.take():
            yield from chunk


def start(what: str, function: Callable[..., T], *args: Any, inline: bool = False) -> Forked[T]:
    """Start ``function(*args)`` in a forked child (inline when asked, or see the module
    docstring); ``what`` names it in errors."""
    if inline or not can_fork():
        try:
            return Forked(what, inline=(True, function(*args)))
        except Exception as err:  # handed back by result(), as from a child
            return Forked(what, inline=(False, err))
    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(target=_child, args=(sender, function, args),
                                                           name=what, daemon=True)
    process.start()
    sender.close()
    return Forked(what, process, receiver)


def _child(sender: Any, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        message: tuple[bool, Any] = (True, function(*args))
    except BaseException as err:  # everything goes back to the parent, which decides
        message = (False, err)
    try:
        sender.send(message)
    except Exception:  # the value or the exception does not pickle
        sender.send((False, BenchError(f"{message[1]!r} (not picklable); child traceback:\n{traceback.format_exc()}")))
    sender.close()
