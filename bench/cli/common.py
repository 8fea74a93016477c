"""Helpers shared by the subcommand modules: the progress bar, the store URL, executor flags."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def progress_bar(description: str):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, initial=done, desc=description, unit="img", file=sys.stderr,
                              dynamic_ncols=True, disable=None)
        else:
            bar["bar"].update(done - bar["bar"].n)
        if done >= total:
            bar["bar"].close()

    return update


def db_url(db: str | None) -> str:
    from pathlib import Path

    from bench.harness.store import default_url

    url = db or default_url()
    return url if "://" in url else f"sqlite:///{Path(url).expanduser().resolve()}"


def executor_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", default="local", choices=["local", "ray"],
                        help="local (default) or ray: shards of the run as Ray tasks (pip install -e '.[ray]')")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
