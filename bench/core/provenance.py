"""What a run records about where it ran: git commit, package versions, device."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import bench
from bench.core.allocator import malloc_tuned

PACKAGES = ("torch", "torchvision", "diffusers", "numpy", "sqlalchemy", "safetensors", "scikit-learn")
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding bench/core/provenance.py


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """HEAD of the project checkout, suffixed ``-dirty`` if tracked files changed; None
    outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "bench": bench.__version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    tuned = " malloc=tuned" if malloc_tuned() else ""
    return f"cpu:{platform.processor() or platform.machine()} threads={torch.get_num_threads()}{tuned}"


def collect_provenance(device: torch.device) -> dict[str, Any]:
    return {
        "git_commit": git_commit(),
        "packages": package_versions(),
        "device": device_description(device),
        "platform": platform.platform(),
    }
