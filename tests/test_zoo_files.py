"""Converters read files in the checkpoints' original formats, written here from our modules'
random weights; the EDM pickle reader never runs embedded code; hub/Drive sources."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.zoo import converters as zoo
from bench.zoo import hub
from bench.core.errors import MissingAssetError
from bench.zoo.nets.safe_pickle import UnsafePickleError, load_edm_network_tensors


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _randomize(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model


# --- EDM: a pickle built like NVlabs' torch_utils.persistence writes it -------------------------

def _persistence_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in ``torch_utils.persistence`` so that pickle can name its reconstructor."""
    package, module = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called when loading
        raise AssertionError("the loader must not call the original reconstructor")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = module
    monkeypatch.setitem(sys.modules, "torch_utils", package)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)
    return module


def write_edm_pickle(path: Path, network: nn.Module, monkeypatch: pytest.MonkeyPatch, module_src: str) -> None:
    """EDM format: dict(ema=..., loss_fn=..., augment_pipe=None, dataset_kwargs=...); every
    EDM class (ours, from bench.zoo.nets.songunet) is reduced to the persistent-object form with
    ``module_src`` embedded; torch.nn containers pickle normally."""
    persistence = _persistence_module(monkeypatch)

    class EDMPickler(pickle.Pickler):
        def reducer_override(self, obj):  # noqa: ANN001
            if isinstance(obj, nn.Module) and type(obj).__module__ == "bench.zoo.nets.songunet":
                # EDM modules keep plain values in __dict__; ours also keep a config dataclass
                state = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in obj.__dict__.items()}
                meta = dict(type="class", version=6, module_src=module_src, class_name=type(obj).__name__, state=state)
                return persistence._reconstruct_persistent_obj, (meta,)
            return NotImplemented

    with open(path, "wb") as handle:
        EDMPickler(handle, protocol=4).dump(dict(ema=network, loss_fn=None, augment_pipe=None,
                                                 dataset_kwargs={"class_name": "training.dataset.ImageFolderDataset"}))


def test_edm_pickle_loads_without_running_its_code(tmp_path, monkeypatch) -> None:
    from bench.zoo.nets.songunet import EDMPrecond, SongUNetConfig

    marker = tmp_path / "pwned"
    network = _randomize(EDMPrecond(SongUNetConfig(img_resolution=8, channels=1, augment_dim=0, model_channels=8,
                                                   channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,))))
    path = tmp_path / "edm.pkl"
    write_edm_pickle(path, network, monkeypatch, module_src=f"open({str(marker)!r}, 'w').write('ran')")
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")  # a fresh process: EDM's code is absent
    monkeypatch.delitem(sys.modules, "torch_utils")
    tensors = load_edm_network_tensors(path)
    assert not marker.exists()
    expected = network.state_dict()
    assert tensors.keys() == expected.keys() and all(torch.equal(tensors[k], expected[k]) for k in expected)


def test_edm_converter_loads_the_full_size_network(tmp_path, monkeypatch) -> None:
    from bench.zoo.nets.songunet import EDMPrecond

    network = _randomize(EDMPrecond())
    path = tmp_path / "edm-cifar10-32x32-uncond-vp.pkl"
    write_edm_pickle(path, network, monkeypatch, module_src="")
    assert _same_weights(zoo.load_edm(path), network)


class _RunsShell:
    def __reduce__(self):  # noqa: ANN204
        return os.system, ("touch pwned-by-pickle",)


def test_edm_loader_refuses_a_pickle_that_executes_code(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ema": _RunsShell()}))
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os)\.system"):
        zoo.load_edm(path)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_edm_loader_rejects_a_file_without_the_network(tmp_path) -> None:
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"G_ema": None}))
    with pytest.raises(MissingAssetError, match="has no 'ema' network"):
        zoo.load_edm(path)


# --- DDPM (google safetensors, pesser state_dict) and Score-SDE checkpoint_8.pth ---------------

def test_google_ddpm_safetensors_round_trip_and_mismatch(tmp_path) -> None:
    from safetensors.torch import save_file

    from bench.zoo.nets.ddpm_unet import ddpm_cifar10_unet

    network = _randomize(ddpm_cifar10_unet())
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    assert _same_weights(zoo.load_google_ddpm(path), network)
    toy = Path(__file__).resolve().parents[1] / "bench" / "zoo" / "toy_assets" / "toy_unet.safetensors"
    with pytest.raises(MissingAssetError, match="does not match UNet2DModel"):
        zoo.load_google_ddpm(toy)


def test_score_sde_checkpoint_round_trip(tmp_path) -> None:
    from bench.zoo.nets.ncsnpp import NCSNpp

    network = _randomize(NCSNpp())
    shadow = [p.detach().clone() for p in network.parameters()]
    path = tmp_path / "checkpoint_8.pth"
    # score_sde_pytorch's save_checkpoint: dict(optimizer, model, ema, step)
    torch.save({"optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "params": [0]}]},
                "model": {f"module.{k}": torch.zeros(1) for k in list(network.state_dict())[:3]},
                "ema": {"decay": 0.9999, "num_updates": 10, "shadow_params": shadow}, "step": 1300000}, path)
    loaded = zoo.load_score_sde(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), shadow))
    torch.save({"ema": {"shadow_params": shadow[:-1]}}, path)
    with pytest.raises(MissingAssetError, match="EMA tensors"):
        zoo.load_score_sde(path)


def test_pickled_objects_are_never_unpickled_by_torch_converters(tmp_path) -> None:
    path = tmp_path / "checkpoint_8.pth"
    torch.save({"ema": _RunsShell()}, path)
    with pytest.raises(MissingAssetError, match="tensor-only"):
        zoo.load_score_sde(path)


# --- sources: Hugging Face hub (local endpoint) and Google Drive (gdown) -----------------------

PAYLOAD = b"safetensors-bytes" * 1000


class HubHandler(BaseHTTPRequestHandler):
    paths: list[str] = []

    def _headers(self) -> None:
        type(self).paths.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", f'"{hashlib.sha256(PAYLOAD).hexdigest()}"')
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        self._headers()

    def do_GET(self) -> None:  # noqa: N802
        self._headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("BENCH_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    added: list[str] = []

    def register(entry: hub.ModelFile) -> None:
        hub.MODEL_FILES.register(entry.name)(entry)
        added.append(entry.name)

    yield register
    for name in added:
        hub.MODEL_FILES.unregister(name)


def test_hub_entry_downloads_through_huggingface_hub(cache, monkeypatch, tmp_path) -> None:
    HubHandler.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        cache(hub.ModelFile(name="test-hub", filename="w.safetensors", urls=(), hf_repo="org/model",
                            description="-", license="-", original_format="-",
                            sha256=hashlib.sha256(PAYLOAD).hexdigest()))
        path = hub.fetch("test-hub")
    finally:
        server.shutdown()
    assert path == tmp_path / "test-hub" / "w.safetensors" and path.read_bytes() == PAYLOAD
    assert any(p.startswith("GET /org/model/resolve/main/w.safetensors") for p in HubHandler.paths)


def test_gdrive_entry_uses_gdown_with_resume(cache, monkeypatch, tmp_path) -> None:
    import gdown

    calls = []

    def fake_download(id, output, quiet, resume):  # noqa: A002, ANN001
        calls.append((id, Path(output).name, resume))
        Path(output).write_bytes(PAYLOAD)
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    cache(hub.ModelFile(name="test-drive", filename="checkpoint.pth", urls=(), gdrive_id="abc123",
                        description="-", license="-", original_format="-", md5=hashlib.md5(PAYLOAD).hexdigest()))
    assert hub.fetch("test-drive").read_bytes() == PAYLOAD
    assert calls == [("abc123", "checkpoint.pth.part", True)]


def test_every_registry_entry_has_a_source_and_a_converter() -> None:
    import importlib

    for name, entry in hub.MODEL_FILES.items():
        assert entry.sources or entry.produce, name  # a download, or the command that makes the file
        module, _, function = entry.converter.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_a_file_without_a_public_source_says_how_to_make_it(monkeypatch, tmp_path) -> None:
    from bench.core.defense import DEFENSES

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    cls = DEFENSES.get("dp_ddpm_addt")
    with pytest.raises(MissingAssetError, match=f"bench addt train --backbone ddpm .* place the resulting file at {tmp_path}"):
        cls.pretrained("cifar10", cls.config_cls())


@pytest.mark.parametrize("defense", ["dp_ddpm", "dp_ddim", "diffpure", "diffpure_pc", "gdmp", "dp_edm", "dp_edm_ode"])
def test_cifar10_defenses_resolve_their_checkpoint_offline(defense, monkeypatch, tmp_path) -> None:
    from bench.core.defense import DEFENSES

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    cls = DEFENSES.get(defense)
    with pytest.raises(MissingAssetError, match=f"place it at {tmp_path}"):
        cls.pretrained("cifar10", cls.config_cls())
    with pytest.raises(MissingAssetError, match="no public cifar100 checkpoint"):
        cls.pretrained("cifar100", cls.config_cls())
