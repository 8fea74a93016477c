"""`bench ls`, `bench show`, `bench fetch`: what the registries hold."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _cmd_ls(args: argparse.Namespace) -> int:
    from bench.core.attack import ATTACKS
    from bench.core.defense import DEFENSES
    from bench.core.settings import SETTING_DESCRIPTIONS
    from bench.zoo.datasets import DATASETS

    sections: dict[str, list[tuple[str, str]]] = {
        "defenses": [(n, c.description) for n, c in DEFENSES.items()],
        "attacks": [(n, c.description) for n, c in ATTACKS.items()],
        "settings": list(SETTING_DESCRIPTIONS.items()),
        "datasets": [(d, "") for d in DATASETS],
    }
    wanted = [args.what] if args.what else list(sections)
    for name in wanted:
        print(f"{name}:")
        width = max(len(n) for n, _ in sections[name])
        for entry, description in sections[name]:
            print(f"  {entry:<{width}}  {description}".rstrip())
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from bench.core.defense import DEFENSES

    card = DEFENSES.get(args.name).card()
    if args.json:
        print(json.dumps(card, indent=2))
        return 0
    from bench.zoo.hub import MODEL_FILES

    for key in ("name", "description", "paper", "license", "nfe", "network_calls"):
        print(f"{key + ':':<15}{card[key]}")
    files = [f"{dataset}: {name} ({MODEL_FILES.get(name).description})" for dataset, name in card["model_files"].items()]
    print(f"{'model files:':<15}" + ("; ".join(files) or "none (the classifier alone)"))
    print("noise streams: " + ", ".join(f"{n} ({s['tensors']} x {s['shape']} per sample, CIFAR shape)" for n, s in card["streams"].items()) if card["streams"] else "noise streams: none (deterministic)")
    print("defaults:       " + ", ".join(f"{k}={v}" for k, v in card["defaults"].items()) if card["defaults"] else "defaults:       (no options)")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from bench.zoo import hub

    if args.cache_dir:
        import os

        os.environ["BENCH_CACHE"] = args.cache_dir
    if not args.name:
        width = max(len(name) for name in hub.MODEL_FILES.names()) + 2
        for name, entry in hub.MODEL_FILES.items():
            print(f"{name:<{width}}{entry.description} [{entry.license}]\n{'':<{width}}-> {hub.local_path(entry)}")
        return 0
    print(hub.fetch(args.name))
    return 0


def add_parsers(sub: Any) -> None:

    ls = sub.add_parser("ls", help="list defenses, attacks, settings and datasets")
    ls.add_argument("what", nargs="?", choices=["defenses", "attacks", "settings", "datasets"])
    ls.set_defaults(func=_cmd_ls)

    show = sub.add_parser("show", help="a defense's card: paper, model files, license, NFE, noise streams, defaults")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_cmd_show)

    fetch = sub.add_parser("fetch", help="download and verify a model file into the cache (no name: list them)")
    fetch.add_argument("name", nargs="?")
    fetch.add_argument("--cache-dir", help="cache folder (default $BENCH_CACHE or ~/.cache/dbp-bench/models)")
    fetch.set_defaults(func=_cmd_fetch)
