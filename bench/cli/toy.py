"""`bench toy train`: the toy suite's models."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


# --classifier NAME: the toy model it trains
CLASSIFIER_KINDS = {"standard": "classifier", "at": "classifier-at", "diffrep-at": "classifier-diffrep-at",
                    "time-robust": "classifier-time-robust"}


def _cmd_toy_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.training.toy import ToyTrainConfig, train_toy_suite
    from bench.zoo.toy import ASSETS, TOY_MODELS

    config = ToyTrainConfig(seed=args.seed, unet_steps=args.unet_steps)
    only = tuple(args.only.split(",")) if args.only else TOY_MODELS
    if args.classifier:
        only = (CLASSIFIER_KINDS[args.classifier],)
    manifest = train_toy_suite(config, Path(args.out) if args.out else ASSETS, progress=lambda m: print(m, file=sys.stderr), only=only)
    print(json.dumps({"metrics": manifest["metrics"], "files": manifest["files"]}, indent=2))
    return 0


def add_parsers(sub: Any) -> None:
    toy = sub.add_parser("toy", help="the toy suite")
    toy_sub = toy.add_subparsers(dest="toy_command", required=True)
    train = toy_sub.add_parser("train", help="train the toy DDPM and classifier and write their weights")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--unet-steps", type=int, default=6000)
    train.add_argument("--out", help="output folder (default: bench/zoo/toy_assets, the committed copy)")
    train.add_argument("--only", help="comma-separated subset of classifier,classifier-at,ddpm,vp,edm,"
                                      "classifier-diffrep-at,classifier-time-robust (default: all)")
    train.add_argument("--classifier", choices=sorted(CLASSIFIER_KINDS),
                       help="train only that classifier (at: PGD-7 adversarial training at the toy threat model; "
                            "diffrep-at: PGD-AT with diffusion-representation alignment to the toy DDPM; "
                            "time-robust: the time-dependent robust classifier that guides rcg_purify)")
    train.set_defaults(func=_cmd_toy_train)
