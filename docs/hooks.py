"""MkDocs hook: write the defense and attack reference pages from the registries before a build."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def on_pre_build(config: Any) -> None:
    from bench.publish.docgen import write_reference

    write_reference(Path(config["docs_dir"]) / "reference")
