"""bench: a benchmark harness for diffusion-based purification (DBP) defenses.

``bench.core`` owns the contracts (the noise contract, attacker-knowledge settings, plug-in
registries, Defense/Attack bases, the target an attack sees, memory planning, metrics);
``bench.families`` the diffusion maths; ``bench.zoo`` model files and data; ``bench.training``
ADDT and toy training; ``bench.harness`` running and storing evaluations; ``bench.publish``
records and the leaderboard; ``bench.cli`` the command line; ``bench.api`` the Python API (``bench.evaluate``). Defenses and attacks are plug-ins in
the top-level ``defenses`` and ``attacks`` packages (or any installed package, via entry points).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Result", "evaluate"]


def __getattr__(name: str) -> Any:
    """``bench.evaluate`` and ``bench.Result`` (:mod:`bench.api`), imported on first use so that
    ``import bench`` stays light."""
    if name in __all__:
        from bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
