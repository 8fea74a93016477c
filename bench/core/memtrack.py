"""Peak live tensor memory on any device, by tracking storages created inside a region.

Written by hand because PyTorch reports peak memory only for CUDA
(``torch.cuda.max_memory_allocated``) and its ``MemTracker`` needs parameters that
require grad. A ``TorchDispatchMode`` sees every op (forward, backward and checkpoint
recomputation) and each new output storage is counted until it is freed.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakMemory(TorchDispatchMode):
    """``with PeakMemory() as m: ...`` then ``m.peak`` is the peak of bytes alive in storages
    allocated inside the block (storages that existed before are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self.live -= self._seen.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor) and not item.is_meta:
                storage = item.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self._seen:
                    self._seen[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    weakref.finalize(storage, self._release, key)
        self.peak = max(self.peak, self.live)
        return out
