"""Where the ``*_addt`` defenses get their ADDT fine-tuned denoisers."""

from __future__ import annotations

from torch import nn


def addt_network(backbone: str, defense: str, dataset: str) -> nn.Module:
    """The ADDT network of ``backbone`` (ddpm | vp | edm) for ``dataset``: the committed toy
    model, or the registry file ``addt-<backbone>-<dataset>`` (a local file made by
    ``bench addt train``; the error says how)."""
    if dataset == "toy":
        from bench.toy import load_toy_addt

        return load_toy_addt(backbone)
    from bench.hub import load_for_dataset

    return load_for_dataset(defense, dataset, {"cifar10": f"addt-{backbone}-cifar10"})
