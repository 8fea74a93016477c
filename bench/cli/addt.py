"""``bench addt train``: fine-tune a backbone with ADDT and write checkpoints / the final EMA model."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.training.fine_tunes import FINE_TUNES

log = logging.getLogger(__name__)
# the clean model each backbone fine-tunes from, per dataset (model-file names, bench/zoo/hub.py)
BASE_FILES = {"ddpm": {"toy": "toy-ddpm", "cifar10": "ddpm-cifar10-google"},
              "vp": {"toy": "toy-vp", "cifar10": "scoresde-vp-cifar10-ddpmpp-deep-continuous"},
              "edm": {"toy": "toy-edm", "cifar10": "edm-cifar10-uncond-vp"}}
# The toy suite's own scale: 9 batches of 128 per epoch (the EMA warm-up adapts by itself), and
# λ matched to its threat model. ADDT's perturbation adds λ·s·ε_δ to x_t, per-pixel std λ_unit·a
# where λ is unclipped; an ℓ∞ attack of ε (in [0, 1] units) moves x_t by a·2ε. CIFAR-10's ratio of
# the two is 2ε/λ_unit = (16/255)/0.03 = 2.09; the toy's ε = 0.25 keeps it with λ_unit =
# 0.5/2.09 = 0.24 (0.03 × 0.25/(8/255), i.e. × 8: bench.training.addt.TOY_LAMBDA_SCALE). λ_max would
# scale to 0.3 × 7.97 = 2.4, but the RBGM mixture needs λ ≤ 1 (sqrt(1 − λ²)), so it is capped at
# 0.9, keeping a tenth of the Gaussian's variance. ADDT_linf keeps its own λ (App. I).
TOY_DEFAULTS = {"batch_size": 128, "epochs": 40, "checkpoint_every": 100}


def add_parsers(sub: Any) -> None:
    addt = sub.add_parser("addt", help="ADDT fine-tuning (RBGM + CGPO)")
    addt_sub = addt.add_subparsers(dest="addt_command", required=True)
    train = addt_sub.add_parser("train", help="fine-tune a diffusion backbone with ADDT")
    _shared_flags(train)
    train.add_argument("--out", help="checkpoint folder (default runs/addt-<backbone>-<dataset>)")
    train.add_argument("--no-resume", action="store_true", help="start over even if --out holds checkpoints")
    train.add_argument("--toy-assets", action="store_true", help="also install the result as the committed toy ADDT model")
    train.add_argument("--device", default="cpu")
    train.set_defaults(func=run_train)

    diagnose = addt_sub.add_parser("diagnose", help="CGPO's ε_δ vs a Gaussian of the same norm: classifier "
                                   "cross-entropy on x̂0 per noise-level band (base model, training images)")
    _shared_flags(diagnose)
    diagnose.add_argument("--n-images", type=int, default=128, help="training images (default 128)")
    diagnose.set_defaults(func=run_diagnose)


def _shared_flags(parser: Any) -> None:
    parser.add_argument("--backbone", required=True, choices=["ddpm", "vp", "edm"],
                        help="ddpm (dp_ddpm/dp_ddim), vp (diffpure), edm (dp_edm)")
    parser.add_argument("--dataset", default="toy", help="toy | cifar10 (default: toy)")
    parser.add_argument("--classifier", help="guidance classifier spec (default: the dataset's)")
    parser.add_argument("--fine-tune", default="rbgm", choices=list(FINE_TUNES),
                        help="which of the paper's fine-tunes: " + "; ".join(f"{k}: {v.description} ({v.tables})"
                                                                             for k, v in FINE_TUNES.items())
                        + " (default rbgm)")
    for name, kind in (("epochs", int), ("batch-size", int), ("lr", float), ("ema-decay", float), ("lambda-unit", float),
                       ("lambda-max", float), ("cgpo-iterations", int), ("checkpoint-every", int), ("seed", int)):
        parser.add_argument(f"--{name}", type=kind, help="default: the paper's (toy: its own scale)")


def run_diagnose(args: argparse.Namespace) -> int:
    from bench.training.addt import cgpo_diagnostics
    from bench.zoo.classifiers import default_classifier, load_classifier
    from bench.zoo.datasets import load_train_split

    cfg = _config(args)
    spec = args.classifier or default_classifier(args.dataset)
    split = load_train_split(args.dataset)
    x0, y = split.images[: args.n_images] * 2 - 1, split.labels[: args.n_images]
    rows = cgpo_diagnostics(args.backbone, _base_model(args.backbone, args.dataset), load_classifier(args.dataset, spec),
                            x0, y, cfg, seed=cfg.seed)
    level = "σ" if args.backbone == "edm" else "t"
    print(f"CGPO diagnostics: {args.backbone} on {args.dataset}, {len(y)} training images, λ_unit {cfg.lambda_unit}, "
          f"λ_max {cfg.lambda_max}, {cfg.cgpo_iterations} iterations; classifier {spec}")
    print(f"| {level} band | mean λ | CE with CGPO ε_δ | CE with Gaussian (same norm) | paired difference | CGPO higher |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| [{r['band_low']:g}, {r['band_high']:g}) | {r['lambda_mean']:.3f} | {r['ce_cgpo']:.4f} | "
              f"{r['ce_gaussian']:.4f} | {r['difference']:+.4f} | {r['cgpo_higher']:.2f} |")
    return 0


def _config(args: argparse.Namespace) -> Any:
    from bench.training.addt import fine_tune_config

    values: dict[str, Any] = dict(TOY_DEFAULTS) if args.dataset == "toy" else {}
    for field in ("epochs", "batch_size", "lr", "ema_decay", "lambda_unit", "lambda_max", "cgpo_iterations",
                  "checkpoint_every", "seed"):
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    return fine_tune_config(args.fine_tune, toy=args.dataset == "toy", **values)


def _base_model(backbone: str, dataset: str) -> Any:
    from bench.core.errors import ConfigError
    from bench.zoo.hub import load_model

    files = BASE_FILES[backbone]
    if dataset not in files:
        raise ConfigError(f"no public {dataset} base model for {backbone} (have: {', '.join(files)}); "
                          "ADDT fine-tunes from a clean model")
    return load_model(files[dataset])


def run_train(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file
    from tqdm import tqdm

    from bench.core.provenance import collect_provenance
    from bench.training.addt import train
    from bench.zoo.classifiers import default_classifier, load_classifier
    from bench.zoo.datasets import load_train_split

    cfg = _config(args)
    classifier_spec = args.classifier or default_classifier(args.dataset)
    suffix = "" if args.fine_tune == "rbgm" else f"-{args.fine_tune}"
    out = Path(args.out or f"runs/addt-{args.backbone}-{args.dataset}{suffix}")
    model = _base_model(args.backbone, args.dataset)
    classifier = load_classifier(args.dataset, classifier_spec)
    split = load_train_split(args.dataset)
    provenance = collect_provenance(__import__("torch").device(args.device))
    metadata = {"fine_tune": args.fine_tune, "base_model": BASE_FILES[args.backbone].get(args.dataset, ""),
                "classifier": classifier_spec, "dataset": args.dataset, "train_images": len(split),
                "git_commit": provenance["git_commit"], "packages": provenance["packages"]}
    bar = tqdm(desc=f"ADDT {args.backbone}", unit="step", file=sys.stderr, dynamic_ncols=True, disable=None)

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.refresh()

    result = train(args.backbone, model, classifier, split.images * 2 - 1, split.labels, cfg, out, metadata,
                   resume=not args.no_resume, progress=progress, device=args.device)
    bar.close()
    if int(__import__("os").environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only rank 0 writes the final model
    final = out / "final.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(final), metadata={"backbone": args.backbone, "fine_tune": args.fine_tune})
    summary = {**metadata, "config": cfg.__dict__, "steps": result.steps, "seconds": round(result.seconds, 1),
               "seconds_per_epoch": round(result.seconds_per_epoch, 2),
               "final_loss_mean_last_50": sum(result.losses[-50:]) / max(len(result.losses[-50:]), 1)}
    (out / "final.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"ADDT {args.backbone} on {args.dataset}: {result.steps} steps, {result.seconds_per_epoch:.1f} s/epoch; "
          f"EMA model: {final}")
    if args.toy_assets:
        if args.dataset != "toy":
            from bench.core.errors import ConfigError

            raise ConfigError("--toy-assets only applies to --dataset toy")
        _install_toy(args.backbone, args.fine_tune, final, summary)
    return 0


def _install_toy(backbone: str, fine_tune: str, final: Path, summary: dict[str, Any]) -> None:
    from bench.zoo.toy import ASSETS, sha256_file, toy_addt_stem

    name = toy_addt_stem(backbone, fine_tune)
    target = ASSETS / f"{name}.safetensors"
    shutil.copyfile(final, target)
    manifest_path = ASSETS / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][target.name] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
    key = f"{backbone}_addt" + ("" if fine_tune == "rbgm" else f"_{fine_tune}")
    manifest.setdefault("models", {})[key] = {
        "file": target.name, "train_seconds": summary["seconds"], "seconds_per_epoch": summary["seconds_per_epoch"],
        "fine_tune": fine_tune, "addt_config": summary["config"], "base_model": summary["base_model"], "classifier": summary["classifier"]}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"installed {target} (manifest updated)")
