"""Classifiers, chosen by a spec string (images in [0, 1]; each model normalizes internally).

Specs (``bench run --classifier SPEC``; the default depends on the dataset):

- ``toy``: the committed toy CNN (default for ``--dataset toy``); ``toy-at``: its PGD-adversarially
  trained twin (``bench toy train --only classifier-at``), a deterministic robust baseline.
- ``robustbench:NAME``: RobustBench's ``load_model(NAME, dataset, threat_model)``, cached in
  ``$BENCH_CACHE/robustbench/<dataset>/<Linf|L2>/NAME.pt``. ``robustbench:Standard`` (WRN-28-10,
  standard training, no normalisation layer) is the CIFAR-10 default, as in DiffPure and ADDT.
- ``wrn-28-10:PATH``: a local WRN-28-10 checkpoint (RobustBench's ``WideResNet`` layout) with
  CIFAR mean/std normalisation in front, as the GDMP/ADDT ``origin.t7`` classifier was trained.
  PATH is a ``.safetensors`` file or a torch file holding a state dict (optionally under
  ``state_dict``/``net``/``model`` and with ``module.`` prefixes), read with ``weights_only=True``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bench.core.errors import ConfigError, MissingAssetError

# Tiny-ImageNet's is ADDT Table 6's WRN-28-10, whose source was never published (loading it names what is needed)
DEFAULT_CLASSIFIERS = {"toy": "toy", "cifar10": "robustbench:Standard", "tinyimagenet": "wrn-28-10-tinyimagenet"}
NUM_CLASSES = {"toy": 10, "cifar10": 10, "cifar100": 100, "tinyimagenet": 200}
# GDMP/ADDT's WRN-28-10 (meliketoy/wide-resnet.pytorch) input normalisation.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
SPEC_FORMS = ("toy, toy-at (PGD-adversarially trained), toy-diffrep-at (PGD-AT with diffusion-representation "
              "alignment), robustbench:NAME (e.g. robustbench:Standard), wrn-28-10:PATH")


class Normalized(nn.Module):
    """``model((x - mean) / std)`` for x (B, 3, H, W) in [0, 1]."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def default_classifier(dataset: str) -> str:
    if dataset not in DEFAULT_CLASSIFIERS:
        raise ConfigError(
            f"{dataset} has no default classifier (RobustBench has no standard-training {dataset} model); "
            f"pass --classifier, one of: {SPEC_FORMS}"
        )
    return DEFAULT_CLASSIFIERS[dataset]


def load_classifier(dataset: str, spec: str | None = None, norm: str = "linf") -> nn.Module:
    """The classifier ``spec`` (default: the dataset's) in eval mode with frozen weights."""
    spec = spec or default_classifier(dataset)
    kind, _, arg = spec.partition(":")
    if spec == "wrn-28-10-tinyimagenet":
        from bench.zoo.hub import load_model

        return load_model(spec)  # unpublished: fetch raises naming the file and where it goes
    if kind in ("toy", "toy-at", "toy-diffrep-at") and not arg:
        if dataset != "toy":
            raise ConfigError(f"--classifier {kind} only works with --dataset toy, not {dataset}")
        from bench.zoo.toy import load_toy_classifier

        model = load_toy_classifier(spec=kind)
    elif dataset == "toy":
        raise ConfigError(f"--classifier {spec!r} does not fit --dataset toy (8x8 grey digits); use toy, toy-at or toy-diffrep-at")
    elif kind == "robustbench" and arg:
        model = load_robustbench(arg, dataset, norm)
    elif kind == "wrn-28-10" and arg:
        model = load_local_wrn(Path(arg), NUM_CLASSES[dataset])
    else:
        raise ConfigError(f"--classifier {spec!r} is not a classifier spec; valid forms: {SPEC_FORMS}")
    return model.eval().requires_grad_(False)


def load_tinyimagenet_wrn(path: Path) -> nn.Module:
    """Converter of ``wrn-28-10-tinyimagenet``: ADDT's Tiny-ImageNet WRN-28-10 was never published,
    so its file format (and its 64x64 pooling) is unknown and no loader can be written for it."""
    raise MissingAssetError(f"{path}: the ADDT Tiny-ImageNet WRN-28-10 was never published, so its file format "
                            "(and its 64x64 pooling) is unknown and no loader is written for it; pass "
                            "--classifier robustbench:NAME or wrn-28-10:PATH with a converted 200-class model")


def load_robustbench(name: str, dataset: str, norm: str) -> nn.Module:
    """RobustBench model ``name``; offline, the checkpoint must already be in the cache."""
    from bench.zoo.compat import import_robustbench
    from bench.zoo.hub import cache_dir, offline

    robustbench = import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    threat = {"linf": "Linf", "l2": "L2"}[norm]
    zoo = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)]
    if name not in zoo:
        import difflib

        close = difflib.get_close_matches(name, list(zoo), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"RobustBench has no {dataset}/{threat} model {name!r}.{hint} "
            f"Valid names include: {', '.join(sorted(zoo)[:8])}, ..."
        )
    model_dir = cache_dir() / "robustbench"
    path = model_dir / dataset / threat / f"{name}.pt"
    if offline() and not path.exists():
        raise MissingAssetError(f"RobustBench {name} is not cached and BENCH_OFFLINE is set: place its checkpoint at {path}")
    try:
        # robustbench reads the file with torch.load's default, weights_only=True since torch 2.6
        return robustbench.load_model(model_name=name, model_dir=str(model_dir), dataset=dataset, threat_model=threat)
    except (pickle.UnpicklingError, RuntimeError, KeyError) as err:
        raise MissingAssetError(f"{path} is not a valid RobustBench {name} checkpoint ({str(err).splitlines()[0]})") from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise MissingAssetError(f"classifier checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise MissingAssetError(
            f"{path} is not a tensor-only checkpoint (a pickled whole network such as origin.t7 would run code "
            f"when loaded: {str(err).splitlines()[0]}). In a trusted environment, re-save it with "
            "torch.save(net.state_dict(), 'wrn.pt') or as safetensors."
        ) from None
    for key in ("state_dict", "net", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise MissingAssetError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module.").removeprefix("model."): v for k, v in obj.items()}


def load_local_wrn(path: Path, num_classes: int) -> nn.Module:
    """A local WRN-28-10 checkpoint wrapped with CIFAR mean/std normalisation."""
    from bench.zoo.compat import import_robustbench
    from bench.zoo.converters import load_strict

    import_robustbench()
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    network = load_strict(WideResNet(depth=28, widen_factor=10, num_classes=num_classes), _read_state_dict(path), path)
    return Normalized(network, CIFAR_MEAN, CIFAR_STD)
