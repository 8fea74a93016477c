"""`bench perf`: cost ratios, memory and the site build, measured in one run."""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_perf(args: argparse.Namespace) -> int:
    """Every section asked for, in one process and one report: the gradient-engine figures per
    ``--model``, the adjoint anchor per ``--adjoint`` x ``--adjoint-dt``, the AutoAttack cost and the
    site build. Without any section flag: the gradient-engine figures of the default models.
    Each block is printed (and flushed) as soon as it is measured, so a long full-size run that is
    cut short still leaves what it finished."""
    from bench.harness import perf

    blocks: list[str] = []

    def emit(block: str) -> None:
        print(block + "\n", flush=True)
        blocks.append(block)

    extras = bool(args.leaderboard or args.attack_cost or args.adjoint)
    if args.model or not extras:
        skip = set(args.skip or [])
        for block in perf.perf_sections(models=args.model, batch=args.batch, eot=args.eot, repeats=args.repeats,
                                        budgets="budgets" not in skip, sweep="sweep" not in skip):
            emit(block)
    if args.adjoint:
        from bench.harness.adjoint import run_adjoint_comparison

        emit(run_adjoint_comparison(args.adjoint, args.batch or 1, args.adjoint_dt or [1e-3]))
    if args.attack_cost:
        from bench.core.config import parse_overrides

        emit(perf.measure_attack_cost(args.attack_cost, args.n_samples, parse_overrides(args.defense_opt),
                                      parse_overrides(args.aa_opt), db=args.db or "sqlite://"))
    if args.leaderboard:
        emit(perf.measure_leaderboard_build(args.leaderboard))
    if args.report:
        from pathlib import Path

        Path(args.report).write_text(perf.report_markdown(blocks, _command(args)), encoding="utf-8")
        print(f"report written to {args.report}")
    return 0


def _command(args: argparse.Namespace) -> str:
    import shlex
    import sys

    return "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["perf"] else "bench perf"


def add_parsers(sub: Any) -> None:
    perf = sub.add_parser("perf", help="measure gradient cost, checkpoint memory and EoT batching")
    perf.add_argument("--model", action="append", choices=["toy", "cifar10-ddpm", "cifar10-ncsnpp", "cifar10-edm"],
                      help="denoiser(s) to measure: the toy DDPM UNet, or at full size with WRN-28-10 and random weights the DDPM UNet, DiffPure's NCSN++ (DDPM++ deep) or EDM's SongUNet (default: toy and cifar10-ddpm)")
    perf.add_argument("--batch", type=int, default=None, help="images per batch (default 16 toy, 1 at full size)")
    perf.add_argument("--eot", type=int, default=4, help="EoT samples for the batch-vs-loop comparison")
    perf.add_argument("--repeats", type=int, default=3, help="timing repeats (the fastest is reported)")
    perf.add_argument("--skip", action="append", choices=["budgets", "sweep"],
                      help="leave out (f) the partial-checkpointing budgets, or only their chunk x fraction sweep "
                           "(the sweep measures 15 plans per model: many minutes at full size on a CPU)")
    perf.add_argument("--leaderboard", type=int, metavar="N", help="also time the site build on N synthetic records")
    perf.add_argument("--attack-cost", metavar="DEFENSE",
                      help="also time aa_rand_fixed and aa_rand against pgd_eot on this toy defense")
    perf.add_argument("--n-samples", type=int, default=16, help="images for --attack-cost (default 16)")
    perf.add_argument("--defense-opt", action="append", metavar="KEY=VALUE", help="defense option for --attack-cost")
    perf.add_argument("--aa-opt", action="append", metavar="KEY=VALUE",
                      help="AutoAttack option for --attack-cost (e.g. n_iter=100, eot=20)")
    perf.add_argument("--db", help="store the --attack-cost runs here (default: in memory)")
    perf.add_argument("--adjoint", action="append", choices=["toy", "cifar10"],
                      help="also: ours vs DiffPure's torchsde adjoint gradient (pip install -e '.[perf]')")
    perf.add_argument("--adjoint-dt", type=float, action="append",
                      help="solver step for --adjoint, repeatable for a dt sweep (default: DiffPure's 1e-3)")
    perf.add_argument("--report", metavar="FILE",
                      help="also write the figures as a Markdown report with the machine, date and commit "
                           "(e.g. docs/performance-report.md)")
    perf.set_defaults(func=_cmd_perf)
