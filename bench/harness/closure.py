"""Which defenses a change touches: the project files each defense's module imports, transitively.

``.ci/pr-check`` smoke-runs every defense whose import closure contains a changed file, so an edit
to a shared base (``defenses/ddpm_purifier.py``, ``bench/families/``) runs the defenses built on it,
not only those whose own file changed. Imports are read from the source (every ``import`` statement,
including those inside functions, which is how the defenses load their networks), so nothing is
executed; written by hand because ``modulefinder`` executes no code either but skips nested imports
and reports stdlib and site-packages too.

``python -m bench.harness.closure CHANGED_FILE...`` prints one line per defense to smoke-run: its
name and its ``--defense-opt`` fast options.
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

from bench.core.provenance import PROJECT_ROOT


PROJECT_PACKAGES = ("bench", "defenses", "attacks")


@functools.lru_cache(maxsize=None)
def _module_file(name: str) -> Path | None:
    """The project source file of module ``name``, found on disk without importing anything
    (None for modules outside the project's packages, or names that are not modules)."""
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = PROJECT_ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _imported_modules(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (``from a import b`` also names ``a.b``,
    in case ``b`` is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in [*parts, base] if p)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n}


def import_closure(module: str) -> set[Path]:
    """The project files ``module`` imports, directly or not (its own file and packages' __init__s
    included)."""
    seen: set[Path] = set()
    stack = [module]
    while stack:
        name = stack.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a module's packages run their __init__ first
            path = _module_file(".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                stack.extend(_imported_modules(path))
    return seen


def defenses_to_smoke(changed: list[str]) -> list[tuple[str, dict[str, str]]]:
    """(name, fast options) of every registered defense whose import closure holds a changed file."""
    from bench.core.defense import DEFENSES

    DEFENSES.load()
    changed_paths = {(PROJECT_ROOT / c).resolve() for c in changed}
    return [(name, dict(cls.fast_options)) for name, cls in DEFENSES.items()
            if import_closure(cls.__module__) & changed_paths]


def main(argv: list[str]) -> int:
    for name, options in defenses_to_smoke(argv):
        print(name, *(f"--defense-opt={key}={value}" for key, value in options.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
