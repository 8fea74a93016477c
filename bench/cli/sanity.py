"""`bench sanity binarization`: is an attack strong enough for a defense (Zimmermann et al., 2022)?"""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_binarization(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.core.config import parse_overrides, split_entry
    from bench.core.provenance import git_commit
    from bench.core.errors import BenchError
    from bench.harness.binarization import Construction, run_binarization
    from bench.harness.components import prepare_run
    from bench.harness.request import RunRequest
    from bench.publish.records import entry_key, threat_label
    from bench.publish.sanity import ImageResult, SanityReport, write_report

    defense, entry_options = split_entry(args.defense)
    request = RunRequest(defense=defense, attack=args.attack, dataset=args.dataset, n_samples=args.n_samples,
                         seed=args.seed, eval_draws=args.draws, batch_size=1,
                         defense_options={**entry_options, **parse_overrides(args.defense_opt)},
                         attack_options=parse_overrides(args.attack_opt))
    prepared = prepare_run(request)  # validated and built, nothing stored
    parts, wanted = prepared.parts, prepared.wanted
    x, y = parts.split.images[prepared.indices], parts.split.labels[prepared.indices]
    entry = entry_key(defense, wanted.defense_config, wanted.classifier, args.dataset, wanted.protocol)
    from bench.publish.records import attack_label

    label = attack_label(args.attack, wanted.attack_config, wanted.protocol)
    try:
        construction = Construction(args.inner_points, args.inner_radius)
    except ValueError as err:
        raise BenchError(f"bench sanity binarization: {err}") from None
    report = run_binarization(parts.model, parts.attack, x, y, prepared.indices, wanted.eps, wanted.setting,
                              args.draws, args.seed, entry, label, construction)
    result = SanityReport(
        test="binarization", defense=entry, defense_config=wanted.defense_config, attack=label,
        attack_config=wanted.attack_config, dataset=args.dataset, threat=threat_label(str(wanted.norm), wanted.eps),
        setting=wanted.setting, eval_draws=args.draws, seed=args.seed, git_commit=git_commit(),
        images=[ImageResult(index=o.index, constructed=o.constructed, passed=o.passed,
                            boundary_rate=o.boundary_rate, attack_rate=o.attack_rate) for o in report.outcomes],
        inner_points=construction.inner_points, inner_radius=construction.inner_radius)
    rate, low, high, n = result.pass_rate
    print(f"binarization test, {entry} x {label}: passed {round(rate * n)}/{n} images with an adversarial example by "
          f"construction ({len(report.outcomes) - n} where the construction failed), pass rate {rate:.3f} "
          f"[{low:.3f}, {high:.3f}]" + ("; TOO WEAK for this defense" if result.too_weak else "")
          + ("; INCONCLUSIVE: the construction failed on every image (the head could not separate a boundary "
             "point from the image under this defense's noise)" if result.inconclusive else ""))
    print(f"report: {write_report(result, Path(args.out))}")
    return 0


def add_parsers(sub: Any) -> None:
    sanity = sub.add_parser("sanity", help="attack sanity checks: bench sanity binarization --defense D --attack A")
    kinds = sanity.add_subparsers(dest="sanity_kind", required=True)
    test = kinds.add_parser("binarization", help="does the attack find an adversarial example that exists by "
                                                 "construction (Zimmermann et al., NeurIPS 2022)?")
    test.add_argument("--defense", required=True)
    test.add_argument("--attack", required=True)
    test.add_argument("--dataset", default="toy")
    test.add_argument("--n-samples", type=int, default=64)
    test.add_argument("--seed", type=int, default=0)
    test.add_argument("--draws", type=int, default=10, help="evaluation draws K")
    test.add_argument("--defense-opt", action="append", metavar="KEY=VALUE")
    test.add_argument("--attack-opt", action="append", metavar="KEY=VALUE", help="e.g. gradient=bpda")
    test.add_argument("--inner-points", type=int, default=24, metavar="N",
                      help="class-0 points of the ball the head is fitted on (Zimmermann et al. use 999; default 24)")
    test.add_argument("--inner-radius", type=float, default=1.0, metavar="ETA",
                      help="their radius as a fraction of eps (Zimmermann et al. use 0.95; default 1.0)")
    test.add_argument("--out", default="results", help="records root; the report goes to OUT/sanity/ (default results/)")
    test.set_defaults(func=_cmd_binarization)
