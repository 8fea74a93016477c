"""The deterministic weight rules of tests/fixtures (its README, "How to apply the rule")."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

# The golden vectors ship with the repository (tests/fixtures/README.md says where they come from).
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def read_manifest(folder: str) -> list[dict[str, str]]:
    with open(FIXTURES / folder / "manifest.tsv", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _murmur_uniform(j: torch.Tensor, i: int) -> torch.Tensor:
    """r in (-1, 1) from the MurmurHash3 finaliser of (j + 1000003 i) mod 2^32 (int64 arithmetic, masked)."""
    mask = (1 << 32) - 1
    h = (j + 1000003 * i) & mask

    def mul(a: torch.Tensor, c: int) -> torch.Tensor:  # (a * c) mod 2^32 without int64 overflow
        return ((a * (c & 0xFFFF)) + (((a * (c >> 16)) & 0xFFFF) << 16)) & mask

    h = h ^ (h >> 16)
    h = mul(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = mul(h, 0xC2B2AE35)
    h = h ^ (h >> 16)
    return 2 * (h.double() + 0.5) / 2**32 - 1


def rule_tensor(rule: str, index: int, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    numel = math.prod(shape) if shape else 1
    j = torch.arange(numel, dtype=torch.int64)
    if rule == "sin":
        base = torch.sin(0.37 * j.double() + 0.11 * index + 0.5) if shape else torch.tensor(math.sin(0.11 * index + 0.5))
        scale = math.sqrt(1.0)
    else:
        base = _murmur_uniform(j if shape else torch.zeros(1, dtype=torch.int64), index)
        scale = math.sqrt(3.0)
    if len(shape) >= 2:
        values = scale * base / math.sqrt(numel / shape[0])
    elif len(shape) == 1 and name.endswith("weight"):
        values = 1 + 0.1 * base
    else:
        values = 0.1 * base
    return values.reshape(shape).to(dtype)


def original_state_dict(folder: str, rule: str) -> dict[str, torch.Tensor]:
    """The ORIGINAL network's state_dict filled by ``rule`` ('sin' or 'hash'); exempt
    constant buffers are omitted (the caller keeps its constructor values)."""
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    state = {}
    for row in read_manifest(folder):
        if "exempt" in row["weight_rule"]:
            continue
        shape = tuple(int(s) for s in row["shape"].split("x")) if row["shape"] not in ("", "scalar", "()") else ()
        state[row["name"]] = rule_tensor(rule, int(row["index"]), row["name"], shape, dtypes[row["dtype"]])
    return state
