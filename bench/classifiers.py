"""Classifiers per dataset (images in [0, 1]; each model normalizes internally)."""

from __future__ import annotations

from torch import nn

from bench.errors import MissingAssetError


def load_classifier(dataset: str) -> nn.Module:
    """The default classifier for ``dataset`` in eval mode with frozen weights."""
    if dataset == "toy":
        from bench.toy import load_toy_classifier

        return load_toy_classifier()
    raise MissingAssetError(
        f"the {dataset} classifier (RobustBench WRN-28-10) comes with the checksummed model "
        "registry (issue #3), which this version does not include yet. Use --dataset toy."
    )
