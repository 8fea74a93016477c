"""Download, resume, checksum and offline behaviour of the model cache, against a local server."""

import json
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.zoo import hub
from bench.core.errors import MissingAssetError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Handler(BaseHTTPRequestHandler):
    fail_first = False  # close the connection half-way through the first full response
    requests: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).requests.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).fail_first and start == 0:
            type(self).fail_first = False
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    Handler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/model.bin"
    httpd.shutdown()


def _entry(url: str, sha256: str | None) -> hub.ModelFile:
    return hub.ModelFile(name="test-model", filename="model.bin", urls=(url,), description="test",
                         license="-", original_format="bytes", sha256=sha256)


@pytest.fixture
def registered(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("BENCH_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def register(entry: hub.ModelFile) -> None:
        hub.MODEL_FILES.unregister(entry.name)
        hub.MODEL_FILES.register(entry.name)(entry)

    yield register
    hub.MODEL_FILES.unregister("test-model")


def test_download_verifies_checksum(server, registered, tmp_path) -> None:
    registered(_entry(server, hashlib.sha256(PAYLOAD).hexdigest()))
    path = hub.fetch("test-model")
    assert path == tmp_path / "model.bin" and path.read_bytes() == PAYLOAD
    assert hub.fetch("test-model") == path and len(Handler.requests) == 1  # cached, no second download


def test_checksum_mismatch_is_refused_and_never_used(server, registered, tmp_path) -> None:
    registered(_entry(server, "0" * 64))
    with pytest.raises(MissingAssetError, match="sha256 .* must have 0000"):
        hub.fetch("test-model")
    assert not (tmp_path / "model.bin").exists() and (tmp_path / "model.bin.rejected").exists()


def test_a_users_mismatching_file_is_left_untouched(server, registered, tmp_path) -> None:
    registered(_entry(server, hashlib.sha256(PAYLOAD).hexdigest()))
    (tmp_path / "model.bin").write_bytes(b"my own file")
    with pytest.raises(MissingAssetError, match="left untouched"):
        hub.fetch("test-model")
    assert (tmp_path / "model.bin").read_bytes() == b"my own file" and not Handler.requests


def test_interrupted_download_resumes_with_a_range_request(server, registered, tmp_path) -> None:
    registered(_entry(server, hashlib.sha256(PAYLOAD).hexdigest()))
    Handler.fail_first = True
    with pytest.raises(MissingAssetError, match="will be resumed"):
        hub.fetch("test-model")
    partial = (tmp_path / "model.bin.part").stat().st_size
    assert 0 < partial < len(PAYLOAD)
    path = hub.fetch("test-model")
    assert path.read_bytes() == PAYLOAD
    assert Handler.requests[-1] == f"bytes={partial}-"


def test_offline_mode_names_the_file_to_place(registered, monkeypatch, tmp_path) -> None:
    registered(_entry("http://127.0.0.1:9/never", None))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    with pytest.raises(MissingAssetError, match=f"place it at {tmp_path / 'model.bin'}"):
        hub.fetch("test-model")


def test_unknown_model_file_name() -> None:
    from bench.core.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="Did you mean 'edm-cifar10-uncond-vp'"):
        hub.fetch("edm-cifar10-uncond")


def load_tiny(path):  # noqa: ANN001, ANN201 - a converter for the trust-on-first-use tests
    """A converter like the real ones: safetensors into a fixed architecture, names and shapes strict."""
    from safetensors.torch import load_file
    from torch import nn

    from bench.zoo.converters import load_strict

    return load_strict(nn.Linear(4, 3), load_file(str(path)), path)


def _tiny_file(path, scale: float = 1.0, shape=(3, 4)) -> None:  # noqa: ANN001
    import torch
    from safetensors.torch import save_file

    weight = torch.arange(12, dtype=torch.float32).reshape(3, 4)[: shape[0], : shape[1]] * scale
    save_file({"weight": weight.contiguous(), "bias": torch.zeros(shape[0])}, str(path))


def _unpinned(registered) -> None:  # noqa: ANN001
    registered(hub.ModelFile(name="test-model", filename="model.bin", urls=("http://127.0.0.1:9/never",),
                             description="test", license="-", original_format="safetensors",
                             converter="tests.test_hub:load_tiny"))


def test_an_unpinned_file_is_trusted_on_first_use_and_rechecked_on_every_load(registered, tmp_path) -> None:
    _unpinned(registered)
    _tiny_file(tmp_path / "model.bin")
    hub.fetch("test-model")  # first use: loads into its architecture, SHA-256 recorded
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["test-model"]["sha256"] == hashlib.sha256((tmp_path / "model.bin").read_bytes()).hexdigest()
    assert hub.load_model("test-model").weight.shape == (3, 4)
    data = bytearray((tmp_path / "model.bin").read_bytes())
    data[-5] ^= 0x40  # one flipped bit in a weight
    (tmp_path / "model.bin").write_bytes(bytes(data))
    with pytest.raises(MissingAssetError, match="changed since its first use"):
        hub.load_model("test-model")
    assert (tmp_path / "model.bin").read_bytes() == bytes(data)  # left untouched


@pytest.mark.parametrize("make, message", [
    (lambda p: _tiny_file(p, shape=(2, 4)), "does not load into its architecture"),  # a different model
    (lambda p: _tiny_file(p, scale=6.5e30), "has a value of magnitude"),  # a corrupted weight
    (lambda p: p.write_bytes(b"not a model at all"), "does not load into its architecture"),
])
def test_fetch_refuses_an_unpinned_file_that_is_not_the_model(registered, tmp_path, make, message) -> None:
    _unpinned(registered)
    make(tmp_path / "model.bin")
    with pytest.raises(MissingAssetError, match=message):
        hub.fetch("test-model")
    assert not (tmp_path / "manifest.json").exists()
