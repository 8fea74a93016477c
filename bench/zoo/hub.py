"""Model files: a checksummed registry, a local cache and a resumable HTTP download.

Three sources: Hugging Face hub entries go through ``huggingface_hub`` (its own cache, revision
pinning and resume), Google Drive entries through ``gdown`` (Drive's confirm-token dance for
large files), and plain URLs (NVIDIA CDN, heibox) through a resumable HTTP download written
here by hand: a Range request plus checksum verification is a few dozen lines and no library
among our dependencies does exactly that.

Files live in ``$BENCH_CACHE`` (default ``~/.cache/dbp-bench/models``). With ``BENCH_OFFLINE=1``
nothing is downloaded and a missing file raises an error naming the exact path to place it at.
A file already in the cache whose checksum does not match is never deleted (it may be the
user's); the error says so. Partial downloads go to ``<name>.part`` and are resumed.

Files whose upstream checksum cannot be pinned offline are trusted on first use: the first time
one is fetched it must load into its architecture (every state-dict name and shape, finite values
of sane size), and its SHA-256 is then recorded in the cache's ``manifest.json``; every later fetch
(every load) re-checks it, so a flipped byte or a swapped file is refused, not loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import MissingAssetError
from bench.core.registry import Registry
from bench.training.fine_tunes import DEFAULT_FINE_TUNE, FINE_TUNES, model_file_name
from bench.zoo.toy import ASSETS, TOY_FILES

log = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    """One downloadable file. ``sha256`` / ``md5`` pin its content when known."""

    name: str
    filename: str
    urls: tuple[str, ...]
    description: str
    license: str
    original_format: str
    sha256: str | None = None
    md5: str | None = None
    hf_repo: str | None = None  # Hugging Face hub repo id; ``filename`` is then the file in it
    hf_revision: str = "main"
    gdrive_id: str | None = None  # Google Drive file id (downloaded with gdown)
    converter: str = ""  # "module:function" turning the file into our torch module
    produce: str = ""  # for files with no public source: the command that creates them
    bundled: bool = False  # shipped inside the package (the toy suite), checked by its manifest
    # "package.module:relative/path": a file shipped inside a plug-in's own package (its SHA-256 pinned)
    package_file: str = ""
    # for a file a paper used but whose source was never published: why, and what would be needed
    unpublished: str = ""

    @property
    def sources(self) -> tuple[str, ...]:
        """Human-readable download locations, first the preferred one."""
        hub_url = (f"https://huggingface.co/{self.hf_repo}/blob/{self.hf_revision}/{self.filename}",) if self.hf_repo else ()
        drive = (f"https://drive.google.com/uc?id={self.gdrive_id}",) if self.gdrive_id else ()
        return hub_url + drive + self.urls


MODEL_FILES: Registry[ModelFile] = Registry("model file")
for _entry in (
    ModelFile(
        name="ddpm-cifar10-pesser-ema",
        filename="pesser_ema_cifar10.ckpt",
        urls=("https://heibox.uni-heidelberg.de/f/2e4f01e2d9ee49bab1d5/?dl=1",),
        description="Ho et al. DDPM CIFAR-10, EMA, 790k steps (pesser/pytorch_diffusion ema_cifar10), used by GDMP",
        license="converted from the DDPM TensorFlow release",
        original_format="torch state_dict (pytorch_diffusion Model names)",
        md5="1fa350b952534ae442b1d5235cce5cd3",
        converter="bench.zoo.converters:load_pesser_ddpm",
    ),
    ModelFile(
        name="ddpm-cifar10-google",
        filename="diffusion_pytorch_model.safetensors",
        urls=(),
        hf_repo="google/ddpm-cifar10-32",
        # the commit that added the safetensors file (refs/pr/14, merged into main): pinning the
        # revision pins the content, since the hub's git tree records the file's LFS SHA-256
        hf_revision="30eb34ce06e995c15ec349bc188a86d6bd0d5359",
        description="Ho et al. DDPM CIFAR-10 in diffusers format (google/ddpm-cifar10-32), used by dp_ddpm/dp_ddim",
        license="Apache-2.0",
        original_format="safetensors, diffusers UNet2DModel names",
        converter="bench.zoo.converters:load_google_ddpm",
    ),
    ModelFile(
        name="scoresde-vp-cifar10-ddpmpp-deep-continuous",
        filename="checkpoint_8.pth",
        urls=(),
        gdrive_id="16_-Ahc6ImZV5ClUc0vM5Iivf8OJ1VSif",
        description="Score SDE VP DDPM++ deep continuous CIFAR-10 (score_sde_pytorch), used by diffpure/diffpure_pc",
        license="Apache-2.0",
        original_format="torch.save dict(optimizer, model, ema{shadow_params}, step)",
        converter="bench.zoo.converters:load_score_sde",
    ),
    ModelFile(
        name="fid-inception-v3",
        filename="weights-inception-2015-12-05-6726825d.pth",
        urls=("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",),
        description="FID's Inception-v3 (the TF 2015-12-05 graph ported by torch-fidelity): the generation study's CIFAR-10 features",
        license="Apache-2.0 (torch-fidelity)",
        original_format="torch.save state_dict (loaded with weights_only=True)",
        converter="bench.zoo.converters:load_fid_inception",
    ),
    ModelFile(
        name="edm-cifar10-uncond-vp",
        filename="edm-cifar10-32x32-uncond-vp.pkl",
        urls=("https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl",),
        description="EDM CIFAR-10 unconditional VP (EDMPrecond + SongUNet DDPM++), used by dp_edm",
        license="CC BY-NC-SA 4.0",
        original_format="pickle dict(ema, loss_fn, augment_pipe, dataset_kwargs) with embedded class code",
        converter="bench.zoo.converters:load_edm",
    ),
):
    MODEL_FILES.register(_entry.name)(_entry)


for _backbone, _base in (("ddpm", "ddpm-cifar10-google"), ("vp", "scoresde-vp-cifar10-ddpmpp-deep-continuous"),
                         ("edm", "edm-cifar10-uncond-vp")):
    MODEL_FILES.register(f"addt-{_backbone}-cifar10")(ModelFile(
        name=f"addt-{_backbone}-cifar10",
        filename=f"addt-{_backbone}-cifar10.safetensors",
        urls=(),
        description=f"ADDT fine-tune of {_base} (EMA weights written by `bench addt train`)",
        license=f"as {_base}",
        original_format="safetensors state_dict of our module (final.safetensors of `bench addt train`)",
        converter=f"bench.zoo.converters:load_addt_{_backbone}",
        produce=(f"bench addt train --backbone {_backbone} --dataset cifar10 --classifier robustbench:Standard "
                 f"--out runs/addt-{_backbone}; the file is runs/addt-{_backbone}/final.safetensors"),
    ))


# ADDT Table 6 (Tiny-ImageNet, WRN-28-10; DP_DDPM / DP_DDIM / DP_EDM, vanilla and ADDT): the
# ADDT repository (LYMDLUT/ADDT, 826e9f0) has no Tiny-ImageNet loader, script or checkpoint and
# links no weights; the paper says only "settings following CIFAR-10". Registered so that a
# Tiny-ImageNet run fails naming exactly what is missing and where a file would go.
_TINY_UNPUBLISHED = ("the ADDT authors did not publish it (no file or link in github.com/LYMDLUT/ADDT at 826e9f0, "
                     "no Tiny-ImageNet code there; the paper gives no source)")
TINYIMAGENET_FILES = {
    "ddpm-tinyimagenet": ("the clean 64x64 Tiny-ImageNet DDPM behind ADDT Table 6's DP_DDPM / DP_DDIM rows",
                          "diffusers UNet2DModel (safetensors)", "bench.zoo.converters:load_google_ddpm"),
    "addt-ddpm-tinyimagenet": ("its ADDT fine-tune (Table 6, DP_DDPM / DP_DDIM + ADDT)",
                               "safetensors state_dict of our module", "bench.zoo.converters:load_addt_ddpm"),
    "edm-tinyimagenet": ("the clean Tiny-ImageNet EDM VP model behind Table 6's DP_EDM row",
                         "EDM pickle (read by the restricted unpickler)", "bench.zoo.converters:load_edm"),
    "addt-edm-tinyimagenet": ("its ADDT fine-tune (Table 6, DP_EDM + ADDT)",
                              "safetensors state_dict of our module", "bench.zoo.converters:load_addt_edm"),
    "wrn-28-10-tinyimagenet": ("the WRN-28-10 Tiny-ImageNet classifier of Table 6 (71.37% clean; avg-pool 16, 200 classes)",
                               "unknown (never published)", "bench.zoo.classifiers:load_tinyimagenet_wrn"),
}
for _name, (_what, _format, _converter) in TINYIMAGENET_FILES.items():
    MODEL_FILES.register(_name)(ModelFile(
        name=_name, filename=f"{_name}.safetensors", urls=(), description=_what, license="unknown",
        original_format=_format, converter=_converter, unpublished=_TINY_UNPUBLISHED,
        produce=("train it as ADDT Sec. 6 describes for CIFAR-10 (`bench addt train --dataset tinyimagenet` for the "
                 "fine-tunes, from the clean model)"),
    ))


_TOY_SOURCES = {"ddpm": ("DDPM UNet2DModel", "bench toy train --only ddpm"),
                "vp": ("VP-SDE NCSN++", "bench toy train --only vp"),
                "edm": ("EDM SongUNet", "bench toy train --only edm")}
for _family, (_what, _command) in _TOY_SOURCES.items():
    for _addt in (False, True):
        _stem = f"{TOY_FILES[_family]}{'_addt' if _addt else ''}"
        MODEL_FILES.register(f"toy-{_family}{'-addt' if _addt else ''}")(ModelFile(
            name=f"toy-{_family}{'-addt' if _addt else ''}",
            filename=f"{_stem}.safetensors",
            urls=(),
            description=f"toy suite {_what} on 8x8 digits{', ADDT fine-tuned' if _addt else ''} (committed)",
            license="this project's",
            original_format="safetensors state_dict of our module, SHA-256 in toy_assets/manifest.json",
            converter=f"bench.zoo.toy:load_toy_{_family}{'_addt' if _addt else ''}",
            produce=(f"bench addt train --backbone {_family} --dataset toy --classifier toy --toy-assets"
                     if _addt else _command),
            bundled=True,
        ))


MODEL_FILES.register("toy-time-robust")(ModelFile(
    name="toy-time-robust", filename="toy_time_classifier.safetensors", urls=(),
    description="toy suite time-dependent adversarially robust classifier h(x_t, t) (Kawar et al. Eq. 5), guides rcg_purify",
    license="this project's", original_format="safetensors state_dict of our module, SHA-256 in toy_assets/manifest.json",
    converter="bench.zoo.toy:load_toy_time_classifier", produce="bench toy train --classifier time-robust", bundled=True,
))


# the ADDT paper's ablation fine-tunes (bench.training.fine_tunes): made by `bench addt train
# --fine-tune NAME`, loaded by the ADDT entries' `fine_tune` option; the toy ones of the DDPM family
# are committed, the others are produced on demand (their absence is an error naming the command)
for _family in _TOY_SOURCES:
    for _tune in FINE_TUNES.values():
        if _tune.name == DEFAULT_FINE_TUNE:
            continue
        _toy = model_file_name(f"toy-{_family}-addt", _tune.name)
        MODEL_FILES.register(_toy)(ModelFile(
            name=_toy, filename=f"{TOY_FILES[_family]}_addt_{_tune.name}.safetensors", urls=(),
            description=f"toy suite {_TOY_SOURCES[_family][0]}, {_tune.description} ({_tune.tables})",
            license="this project's", original_format="safetensors state_dict of our module, SHA-256 in toy_assets/manifest.json",
            converter=f"bench.zoo.toy:load_toy_{_family}_addt",
            produce=f"bench addt train --backbone {_family} --dataset toy --classifier toy --fine-tune {_tune.name} --toy-assets",
            bundled=True,
        ))
        _cifar = model_file_name(f"addt-{_family}-cifar10", _tune.name)
        MODEL_FILES.register(_cifar)(ModelFile(
            name=_cifar, filename=f"{_cifar}.safetensors", urls=(),
            description=f"{_tune.description} of the CIFAR-10 {_family} model ({_tune.tables}; written by `bench addt train`)",
            license="as its base model", original_format="safetensors state_dict of our module (final.safetensors of `bench addt train`)",
            converter=f"bench.zoo.converters:load_addt_{_family}",
            produce=(f"bench addt train --backbone {_family} --dataset cifar10 --classifier robustbench:Standard "
                     f"--fine-tune {_tune.name}; the file is runs/addt-{_family}-cifar10-{_tune.name}/final.safetensors"),
        ))


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "dbp-bench" / "models"))


def offline() -> bool:
    return os.environ.get("BENCH_OFFLINE", "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, entry: ModelFile) -> None:
    """Raise if ``path`` does not match the entry's pinned checksum(s)."""
    for algorithm, expected in (("sha256", entry.sha256), ("md5", entry.md5)):
        if expected:
            actual = file_digest(path, algorithm)
            if actual != expected:
                raise MissingAssetError(
                    f"{path} has {algorithm} {actual} but {entry.name} must have {expected}: the file is "
                    "corrupted, truncated or a different model. It was left untouched; delete or replace it "
                    f"and run `bench fetch {entry.name}` again."
                )


MANIFEST = "manifest.json"
PARAMETER_LIMIT = 1e4  # no trained diffusion or classifier weight is anywhere near this large


def _manifest_path() -> Path:
    return cache_dir() / MANIFEST


def _read_manifest() -> dict[str, Any]:
    import json

    path = _manifest_path()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MissingAssetError(f"the model cache manifest {path} is unreadable ({err}); fix or delete it "
                                "(the files are then re-checked and recorded again)") from None


def _write_manifest(manifest: dict[str, Any]) -> None:
    import json

    path = _manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def check_structure(entry: ModelFile, path: Path) -> None:
    """Load ``path`` with the entry's converter (every state-dict name and shape must match its
    architecture) and refuse non-finite or implausibly large parameters."""
    import importlib

    import torch

    if not entry.converter:
        return
    module_name, _, function = entry.converter.partition(":")
    try:
        module = getattr(importlib.import_module(module_name), function)(path)
    except Exception as err:  # noqa: BLE001 - any failure to load means the file is not this model
        raise MissingAssetError(f"{path} is not {entry.name}: it does not load into its architecture "
                                f"({type(err).__name__}: {err}). It was not used.") from None
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and tensor.numel():
            if not torch.isfinite(tensor).all():
                raise MissingAssetError(f"{path}: parameter {name} of {entry.name} has non-finite values; the file "
                                        "is corrupted. It was not used.")
            largest = float(tensor.abs().max())
            if largest > PARAMETER_LIMIT:
                raise MissingAssetError(f"{path}: parameter {name} of {entry.name} has a value of magnitude "
                                        f"{largest:.3g}; the file is corrupted. It was not used.")


def trust_on_first_use(entry: ModelFile, path: Path, source: str) -> None:
    """For a file without a pinned checksum: check it against the SHA-256 recorded at its first
    use, or, the first time, check its structure and record its SHA-256."""
    from datetime import datetime, timezone

    if entry.sha256 or entry.md5:
        return
    digest = file_digest(path, "sha256")
    manifest = _read_manifest()
    known = manifest.get(entry.name)
    if known and known.get("filename") == entry.filename:
        if known.get("sha256") != digest:
            raise MissingAssetError(
                f"{path} changed since its first use: its sha256 is {digest}, {known.get('sha256')} was recorded "
                f"on {known.get('first_seen')} in {_manifest_path()}. It was left untouched and not used; delete it "
                f"and run `bench fetch {entry.name}` again (or, if you replaced it on purpose, remove its entry "
                "from the manifest).")
        return
    check_structure(entry, path)
    manifest[entry.name] = {"filename": entry.filename, "sha256": digest, "source": source,
                            "first_seen": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_manifest(manifest)
    log.warning("%s has no pinned checksum: trusted on first use, sha256 %s recorded in %s",
                entry.name, digest, _manifest_path())


def download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming a previous partial download with
    an HTTP Range request (restarting if the server ignores it), then rename atomically."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (registry URLs only)
        resumed = bool(offset) and response.status == 206
        length = response.headers.get("Content-Length")
        written = 0
        with open(part, "ab" if resumed else "wb") as handle:
            for block in iter(lambda: response.read(CHUNK), b""):
                handle.write(block)
                written += len(block)
    if length is not None and written != int(length):
        raise OSError(f"download of {url} stopped after {written} of {length} bytes; it will resume from {part}")
    part.replace(dest)


def register_model_file(entry: ModelFile) -> ModelFile:
    """Register a model file from a plug-in's own module (a defense that brings its network
    declares its files beside it). A file shipped in the plug-in's package (``package_file``)
    must pin its SHA-256."""
    if entry.package_file and not entry.sha256:
        raise MissingAssetError(f"model file {entry.name}: a package_file must pin its sha256")
    return MODEL_FILES.register(entry.name)(entry)


def local_path(entry: ModelFile) -> Path:
    """Where the cache keeps ``entry`` (hub files get a folder: their names are generic); bundled
    files live in the package's ``toy_assets/``, a plug-in's packaged files in its package."""
    if entry.package_file:
        import importlib

        module, _, relative = entry.package_file.partition(":")
        return Path(importlib.import_module(module).__file__).resolve().parent / relative
    if entry.bundled:
        return ASSETS / entry.filename
    if entry.hf_repo:
        return cache_dir() / entry.name / entry.filename
    return cache_dir() / entry.filename


def _download_hub(entry: ModelFile, dest: Path) -> None:
    from huggingface_hub import hf_hub_download

    # HF_ENDPOINT is read at call time (not only at import) so that mirrors and tests work
    hf_hub_download(repo_id=entry.hf_repo, filename=entry.filename, revision=entry.hf_revision,
                    local_dir=dest.parent, endpoint=os.environ.get("HF_ENDPOINT") or None)


def _download_gdrive(entry: ModelFile, dest: Path) -> None:
    import gdown

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if gdown.download(id=entry.gdrive_id, output=str(part), quiet=True, resume=True) is None:
        raise OSError(f"Google Drive refused file id {entry.gdrive_id} (quota or permissions)")
    part.replace(dest)


def _downloaders(entry: ModelFile) -> list[tuple[str, Callable[[], None]]]:
    dest = local_path(entry)
    steps: list[tuple[str, Callable[[], None]]] = []
    if entry.hf_repo:
        steps.append((entry.sources[0], lambda: _download_hub(entry, dest)))
    if entry.gdrive_id:
        steps.append((f"https://drive.google.com/uc?id={entry.gdrive_id}", lambda: _download_gdrive(entry, dest)))
    steps += [(url, lambda url=url: download(url, dest)) for url in entry.urls]
    return steps


def fetch(name: str) -> Path:
    """The verified local path of model file ``name``, downloading it first if needed."""
    from bench.core.defense import DEFENSES

    DEFENSES.load()  # plug-ins register their own model files when their modules are imported
    entry = MODEL_FILES.get(name)
    dest = local_path(entry)
    if entry.package_file:
        if not dest.is_file():
            raise MissingAssetError(f"{entry.name}: {dest} is missing from its package; reinstall the plug-in")
        verify(dest, entry)
        return dest
    if entry.bundled:  # checked against its manifest by the converter
        if not dest.exists():
            raise MissingAssetError(f"{entry.name}: {dest} is missing; create it with `{entry.produce}` "
                                    "or restore bench/zoo/toy_assets/ from git")
        return dest
    if dest.exists():
        verify(dest, entry)
        trust_on_first_use(entry, dest, "placed in the cache")
        return dest
    if entry.unpublished:
        raise MissingAssetError(f"{entry.name} ({entry.description}): source not published: {entry.unpublished}. "
                                f"Needed: that file, or one made the same way ({entry.produce}), placed at {dest}")
    if not entry.sources:
        raise MissingAssetError(f"{entry.name} has no public download; create it with `{entry.produce}` "
                                f"and place the resulting file at {dest}")
    if offline():
        raise MissingAssetError(
            f"{entry.name} is not in the cache and BENCH_OFFLINE is set: download {entry.sources[0]} "
            f"elsewhere and place it at {dest}"
        )
    errors = []
    for source, run in _downloaders(entry):
        try:
            log.info("downloading %s from %s", entry.name, source)
            run()
            break
        except Exception as err:  # noqa: BLE001 - every source failing is reported together below
            errors.append(f"{source}: {type(err).__name__}: {err}")
    else:
        raise MissingAssetError(
            f"could not download {entry.name} ({'; '.join(errors)}). A partial file, if any, is kept beside "
            f"{dest} and will be resumed; or place the file at {dest} yourself."
        )
    try:
        verify(dest, entry)
        trust_on_first_use(entry, dest, source)
    except MissingAssetError:
        dest.replace(dest.with_name(dest.name + ".rejected"))  # our own download: set aside, never used
        raise
    return dest


def load_model(name: str) -> Any:
    """Fetch model file ``name`` and convert it to our torch module with its converter."""
    import importlib

    entry = MODEL_FILES.get(name)
    module_name, _, function = entry.converter.partition(":")
    converter = getattr(importlib.import_module(module_name), function)
    return converter(fetch(name))


def load_network(defense: Any, dataset: str, config: Any = None) -> Any:
    """The network a defense class uses on ``dataset``, from its ``model_files`` map
    ({dataset: model-file name}); an ADDT entry's ``fine_tune`` option (in ``config``) picks one of
    the paper's ablation fine-tunes instead (:func:`bench.training.fine_tunes.model_file_name`)."""
    files = defense.model_files
    if dataset not in files:
        raise MissingAssetError(
            f"{defense.name} has no public {dataset} checkpoint in the model registry (it has: "
            f"{', '.join(files) or 'none'}). Train one (`bench addt train`) or register a local file in "
            "bench/zoo/hub.py and name it in the defense's model_files."
        )
    return load_model(model_file_name(files[dataset], getattr(config, "fine_tune", DEFAULT_FINE_TUNE)))
