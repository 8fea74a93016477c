"""ADDT Table 7's generation study: batch-independent sampling, the Fréchet distance, the FID network."""

from __future__ import annotations

import pytest
import torch

from bench.harness.generation import frechet_distance, generate


def test_sampling_is_per_sample_and_batch_independent() -> None:
    from bench.zoo.toy import tiny_unet

    from diffusers import DDPMScheduler

    config = dict(DDPMScheduler(num_train_timesteps=20).config)
    whole = generate(tiny_unet(), config, 4, (1, 8, 8), seed=3, batch_size=4)
    pieces = generate(tiny_unet(), config, 4, (1, 8, 8), seed=3, batch_size=3)
    assert whole.shape == (4, 1, 8, 8) and 0 <= whole.min() and whole.max() <= 1
    assert torch.allclose(whole, pieces, atol=1e-5)
    assert not torch.allclose(whole, generate(tiny_unet(), config, 4, (1, 8, 8), seed=4, batch_size=4))


def test_the_frechet_distance_matches_its_closed_form() -> None:
    """Same covariance, means apart by m: FD = |m|^2 (up to the finite-sample bias), and ~0 for
    two samples of one Gaussian; the interval holds the point estimate."""
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    same = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    shifted = torch.randn(4000, 3, generator=g, dtype=torch.float64) + torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    near = frechet_distance(same, reference, resamples=50)
    far = frechet_distance(shifted, reference, resamples=50)
    assert near.distance < 0.02 and far.distance == pytest.approx(4.0, abs=0.25)
    assert far.ci_low <= far.distance <= far.ci_high and (far.n_generated, far.n_reference) == (4000, 4000)


def test_the_generation_study_ranks_real_images_first(tmp_path) -> None:
    """On the toy: held-out real digits sit closest to the training images; a model is measured
    in the toy CNN's features (named so: never FID)."""
    from bench.harness.store import open_store
    from bench.harness.studies import StudyRequest, run_study

    result = run_study(open_store(f"sqlite:///{tmp_path / 'b.sqlite'}"), "generation",
                       StudyRequest(dataset="toy", n_samples=6, values=["dp_ddpm"], out_dir=tmp_path))
    rows = result.results["rows"]
    assert [r["entry"] for r in rows] == ["real (test split)", "dp_ddpm"] and "not FID" in result.results["metric"]
    assert rows[0]["fd"][0] < rows[1]["fd"][0] and rows[1]["n"] == 6
    assert (tmp_path / f"{result.study_id}-generation.json").exists()


def test_fid_inception_loads_a_state_dict_file_safely(tmp_path, monkeypatch, capfd) -> None:
    """The converter reads torch-fidelity's weights file format (a torch-saved state_dict) with
    weights_only=True and refuses a pickle that holds anything else."""
    pytest.importorskip("torch_fidelity")
    import pickle

    from torchmetrics.image.fid import NoTrainInceptionV3

    from bench.zoo.converters import load_fid_inception

    with monkeypatch.context() as patched:  # a random-weight network of the real layout, to write its file
        patched.setattr(torch.nn.Module, "load_state_dict", lambda self, state, *a, **k: None)
        patched.setattr(torch, "load", lambda *a, **k: {})
        network = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                     feature_extractor_weights_path="unused")
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(network.state_dict(), path)
    features = load_fid_inception(path)
    assert features(torch.rand(2, 3, 32, 32)).shape == (2, 2048)

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("unpickled",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        load_fid_inception(evil)
    assert "unpickled" not in capfd.readouterr().out
