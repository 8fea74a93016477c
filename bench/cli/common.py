"""Helpers shared by the subcommand modules: the progress bar, the store URL, executor flags."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def progress_bar(description: str, log_every: float = 30.0):  # type: ignore[no-untyped-def]
    """A tqdm bar (images, possibly fractional: progress inside a batch, see
    ``runner._within_batch_progress``). Without a terminal (CI, ``nohup``), tqdm stays silent, so
    a line with the ETA goes to stderr every ``log_every`` seconds instead."""
    import time

    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def update(done: float, total: int) -> None:
        now = time.monotonic()
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, initial=done, desc=description, unit="img", file=sys.stderr,
                              dynamic_ncols=True, disable=None,
                              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} img [{elapsed}<{remaining}]")
            bar.update(start=now, first=done, logged=now)
        else:
            bar["bar"].update(done - bar["bar"].n)
        if bar["bar"].disable and now - bar["logged"] >= log_every and done > bar["first"]:
            elapsed = now - bar["start"]
            eta = (total - done) * elapsed / (done - bar["first"])
            print(f"{description}: {done:.1f}/{total} img, {elapsed:.0f} s elapsed, ETA {eta:.0f} s",
                  file=sys.stderr, flush=True)
            bar["logged"] = now
        if done >= total:
            bar["bar"].close()

    return update


def db_url(db: str | None) -> str:
    from bench.harness.store import store_url

    return store_url(db)


def executor_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", default="local", choices=["local", "ray"],
                        help="local (default) or ray: shards of the run as Ray tasks (pip install -e '.[ray]')")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
