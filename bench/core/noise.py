"""The noise contract: every random number a defense uses comes from here.

A defense declares named noise *streams* (``forward``, ``reverse``, ...), each a list of
``steps`` tensors of a per-sample ``shape`` (:class:`StreamSpec`). The caller builds a
:class:`NoiseBatch` for a batch of samples, where the noise of each (sample, stream) pair
is drawn from its own CPU generator seeded by
``derive_seed(run_seed, sample_index, stream, *key)``. The *key* says which draw this is
(an evaluation draw, an attack EoT sample, a fixed "known" draw, ...): attacker-knowledge
settings (:mod:`bench.core.settings`) are nothing but rules that choose keys.

Because seeds are per sample and noise is generated on the CPU, the same sample gets the
same noise whatever batch, shard or device it is processed in, and noise can be passed
into checkpointed steps so recomputation replays it exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

Key = tuple[object, ...]
"""Identifies one draw of one stream for one sample, e.g. ``("eval", 3)``."""


@dataclass(frozen=True)
class StreamSpec:
    """One named noise stream: ``steps`` tensors of per-sample shape ``shape``."""

    steps: int
    shape: tuple[int, ...]


NoiseSpec = Mapping[str, StreamSpec]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from a tuple of ints/strings, stable across runs, platforms and Python
    versions (SHA-256 of the parts; Python's ``hash`` is salted per process)."""
    text = "\x1f".join(f"{type(p).__name__}:{p}" for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & (2**63 - 1)


class NoiseBatch:
    """Noise for a batch: ``streams[name]`` has shape ``(steps, B, *shape)``.

    ``noise.step("reverse", k)`` is the tensor of shape ``(B, *shape)`` used by step ``k``.
    """

    def __init__(self, streams: Mapping[str, torch.Tensor]) -> None:
        self.streams = dict(streams)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.streams[name]
        except KeyError:
            raise KeyError(
                f"noise stream {name!r} was not generated; streams present: {sorted(self.streams)}"
            ) from None

    def step(self, name: str, k: int) -> torch.Tensor:
        return self[name][k]

    @property
    def batch_size(self) -> int:
        sizes = {t.shape[1] for t in self.streams.values()}
        if len(sizes) != 1:
            raise ValueError(f"inconsistent batch sizes across noise streams: {sizes}")
        return sizes.pop()

    def to(self, device: torch.device | str, dtype: torch.dtype) -> NoiseBatch:
        return NoiseBatch({k: v.to(device=device, dtype=dtype) for k, v in self.streams.items()})

    def narrow(self, start: int, length: int) -> NoiseBatch:
        """Samples ``start:start+length`` of the batch."""
        return NoiseBatch({k: v.narrow(1, start, length) for k, v in self.streams.items()})

    def select(self, rows: Sequence[int] | torch.Tensor) -> NoiseBatch:
        """The batch rows ``rows`` (in that order, repeats allowed)."""
        index = torch.as_tensor(rows, dtype=torch.long)
        return NoiseBatch({k: v.index_select(1, index.to(v.device)) for k, v in self.streams.items()})

    @staticmethod
    def cat(parts: Sequence[NoiseBatch]) -> NoiseBatch:
        names = parts[0].streams.keys()
        return NoiseBatch({k: torch.cat([p.streams[k] for p in parts], dim=1) for k in names})


class NoiseSource:
    """Generates per-sample noise for a run from its seed.

    Args:
        run_seed: the run's seed; together with the sample index, stream name and key it
            fully determines each noise tensor.
    """

    def __init__(self, run_seed: int) -> None:
        self.run_seed = int(run_seed)

    def sample_tensor(self, sample_id: int, stream: str, key: Key, spec: StreamSpec) -> torch.Tensor:
        """Noise of one (sample, stream, key): shape ``(spec.steps, *spec.shape)``, float32, CPU."""
        generator = torch.Generator(device="cpu")
        generator.manual_seed(derive_seed(self.run_seed, int(sample_id), stream, *key))
        return torch.randn((spec.steps, *spec.shape), generator=generator, dtype=torch.float32)

    def batch(
        self,
        spec: NoiseSpec,
        sample_ids: Sequence[int],
        keys: Sequence[Mapping[str, Key]],
    ) -> NoiseBatch:
        """Noise for a batch whose i-th element is sample ``sample_ids[i]`` drawn with
        ``keys[i][stream]`` for every stream of ``spec``. Returns CPU float32 tensors."""
        if len(sample_ids) != len(keys):
            raise ValueError(f"{len(sample_ids)} sample ids but {len(keys)} key sets")
        streams = {}
        for name, stream_spec in spec.items():
            per_sample = [
                self.sample_tensor(sid, name, key_set[name], stream_spec)
                for sid, key_set in zip(sample_ids, keys)
            ]
            streams[name] = (
                torch.stack(per_sample, dim=1)
                if per_sample
                else torch.empty((stream_spec.steps, 0, *stream_spec.shape))
            )
        return NoiseBatch(streams)

    def generator(self, sample_id: int, *key: object) -> torch.Generator:
        """A per-sample CPU generator for randomness outside the defense (e.g. a PGD random
        start), seeded the same way so it is also independent of batching."""
        generator = torch.Generator(device="cpu")
        generator.manual_seed(derive_seed(self.run_seed, int(sample_id), "aux", *key))
        return generator
