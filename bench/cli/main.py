"""The ``bench`` command line; each subcommand group lives in its own module of this package.

Subcommands: ``ls``, ``show``, ``fetch`` (catalog); ``run``, ``resume``, ``grid``, ``reproduce``,
``results``, ``compare`` (runs); ``export``, ``validate``, ``verify``, ``leaderboard build``
(publish); ``study`` (studies); ``perf``; ``toy train``; ``addt train``; ``new defense`` (scaffold); ``sanity binarization``. Errors a user can fix (:class:`bench.core.errors.BenchError`) print
one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bench.cli import addt, catalog, new, perf, publish, runs, sanity, study, toy
from bench.core.allocator import tune_glibc_malloc
from bench.core.errors import BenchError

SUBCOMMAND_MODULES = (catalog, runs, publish, addt, toy, study, perf, new, sanity)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Benchmark diffusion-based purification defenses.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMAND_MODULES:
        module.add_parsers(sub)
    return parser


def _terminate_as_interrupt(signum: int, _frame: object) -> None:
    """SIGTERM (``timeout``, Slurm, Ray) ends a run the way Ctrl-C does: stored samples are kept
    and the run is marked ``interrupted``, so ``bench resume`` finishes it."""
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    import signal

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    tune_glibc_malloc()
    try:
        return int(args.func(args))
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
