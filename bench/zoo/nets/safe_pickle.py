"""Read the tensors of an EDM network pickle without importing or executing its code.

NVlabs' EDM checkpoints (``edm-cifar10-32x32-uncond-vp.pkl``) are plain pickles of
``dict(ema=EDMPrecond, loss_fn=..., augment_pipe=..., dataset_kwargs=...)`` whose classes are
"persistent": each object is rebuilt by ``torch_utils.persistence._reconstruct_persistent_obj``
from a ``meta`` dict that embeds the class's **source code** and executes it. A normal
``pickle.load`` would therefore run arbitrary code from the file (and needs EDM's repository on
the path). Neither ``torch.load(weights_only=True)`` nor safetensors can read such a file, so
this small restricted unpickler is written here:

- the persistent-object constructor is replaced by one that keeps ``meta['class_name']`` and
  ``meta['state']`` and ignores ``meta['module_src']`` (never compiled, never executed);
- ``torch.nn`` containers and EDM's helper dict classes become inert :class:`Stub` objects;
- tensors are rebuilt by torch's own tensor/parameter rebuild functions, and each storage blob
  is read with ``torch.load(weights_only=True)``;
- every other global (``os.system``, ``builtins.eval``, ``subprocess``...) is refused with
  :class:`UnsafePickleError` before anything is called.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

import torch

from bench.core.errors import MissingAssetError


class UnsafePickleError(MissingAssetError):
    """The pickle references a global outside the allowlist (it may try to execute code)."""


class Stub(dict):
    """An inert stand-in for any allowlisted class: records constructor args and state.

    It subclasses ``dict`` so that pickled ``dict`` subclasses (``dnnlib.EasyDict``) can
    receive their items; it has no behaviour of its own.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        obj = super().__new__(cls)
        obj.stub_args = args
        obj.stub_state = None
        obj.class_name = cls.__name__
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # arguments were recorded in __new__
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        self.stub_state = state

    def __reduce__(self) -> Any:  # never re-pickled
        raise TypeError("Stub objects cannot be pickled")


def _reconstruct_persistent_obj(meta: dict[str, Any]) -> Stub:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: the class source
    in ``meta['module_src']`` is dropped unread."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafePickleError(f"unexpected persistent-object metadata of type {type(meta).__name__}")
    obj = Stub()
    obj.class_name = str(meta.get("class_name"))
    obj.stub_state = meta.get("state")
    return obj


def _load_storage_bytes(data: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes`` (which uses ``weights_only=False``)."""
    return torch.load(io.BytesIO(data), weights_only=True)


_ALLOWED_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
}
# Classes from these modules are replaced by inert Stubs (data only, never instantiated for real).
_STUB_MODULE_PREFIXES = ("torch.nn.modules.", "dnnlib.util", "torch_utils.", "training.")
_stub_classes: dict[tuple[str, str], type[Stub]] = {}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allowlisted globals (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[(module, name)]
        if module == "copyreg" and name == "_reconstructor":
            return _reconstructor
        if module == "builtins" and name == "object":
            return object
        if module.startswith(_STUB_MODULE_PREFIXES) and name[:1].isupper():
            key = (module, name)
            if key not in _stub_classes:
                _stub_classes[key] = type(name, (Stub,), {"__module__": "bench.zoo.nets.safe_pickle.stubs"})
            return _stub_classes[key]
        raise UnsafePickleError(
            f"refusing to load {module}.{name} from the pickle: only tensors, torch.nn containers and "
            "EDM persistent objects are allowed (the file may try to execute code)"
        )


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` restricted to stub classes."""
    if not (isinstance(cls, type) and issubclass(cls, Stub)):
        raise UnsafePickleError(f"refusing copyreg._reconstructor for {cls!r}")
    obj = cls()
    if state is not None:
        obj.stub_state = state
    return obj


def restricted_load(handle: BinaryIO) -> Any:
    return RestrictedUnpickler(handle).load()


def module_tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a stubbed ``nn.Module`` tree into ``{dotted.name: tensor}`` (parameters and
    buffers, like ``state_dict``), following ``_parameters``, ``_buffers`` and ``_modules``."""
    state = getattr(obj, "stub_state", None)
    if not isinstance(state, dict):
        raise MissingAssetError(f"object at {prefix or '<root>'!r} is not a pickled torch module")
    tensors: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is not None:
                tensors[prefix + name] = value.detach() if isinstance(value, torch.Tensor) else value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            tensors.update(module_tensors(child, f"{prefix}{name}."))
    return tensors


def load_edm_network_tensors(path: Path, key: str = "ema") -> dict[str, torch.Tensor]:
    """The tensors of network ``key`` (default the EMA network) of an EDM ``.pkl``."""
    with open(path, "rb") as handle:
        try:
            data = restricted_load(handle)
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, RuntimeError) as err:
            raise MissingAssetError(f"{path} is not a readable EDM network pickle ({err})") from None
    if not isinstance(data, dict) or key not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise MissingAssetError(f"{path} has no {key!r} network (found {found}); is it an EDM network pickle?")
    return module_tensors(data[key])
