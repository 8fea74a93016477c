"""Import shims for third-party packages whose published versions disagree with each other."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def import_robustbench() -> ModuleType:
    """Import robustbench 1.1.1, which does ``from autoattack import ...`` at import time
    although the official AutoAttack on PyPI is the ``pyautoattack`` module: alias the
    modules first (the robustbench / pyautoattack install alias)."""
    if "robustbench" in sys.modules:
        return sys.modules["robustbench"]
    pyautoattack = importlib.import_module("pyautoattack")
    sys.modules.setdefault("autoattack", pyautoattack)
    sys.modules.setdefault("autoattack.state", importlib.import_module("pyautoattack.state"))
    return importlib.import_module("robustbench")
