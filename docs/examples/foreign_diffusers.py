"""A purifier nobody here wrote, evaluated as it is, against the native plug-in.

``DiffusersDDPMPurifier`` is DDPM purification assembled from diffusers' own ``DDPMScheduler``
(``variance_type="fixed_large"``): ``add_noise`` to t* = 100, then ``scheduler.step`` over the
respaced timesteps 100, 95, ..., 0, which draws its variance noise itself. It takes a
``generator`` argument (one ``torch.Generator`` per batch row, which diffusers' ``randn_tensor``
and ``step`` accept), so the harness's foreign-purifier adapter runs it batched, each row seeded
per sample and per draw. The native ``dp_ddpm`` plug-in does the same arithmetic with named noise
streams; the two must agree statistically on the same images (not draw for draw: their noise
differs).

``python docs/examples/foreign_diffusers.py`` prints the paired differences, the gradient check
and the adapter's cost against the native plug-in's.
"""

from __future__ import annotations

import time

import torch
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

import bench
from bench.core.metrics import paired_difference
from bench.zoo.toy import load_toy_unet

T_STAR, NFE = 100, 20  # the toy protocol's dp_ddpm


class DiffusersDDPMPurifier(torch.nn.Module):
    """DDPM purification with diffusers' scheduler; images in [0, 1] at the boundary."""

    def __init__(self, unet: torch.nn.Module, t_star: int = T_STAR, nfe: int = NFE) -> None:
        super().__init__()
        self.unet, self.t_star = unet, t_star
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_large", clip_sample=True)
        self.scheduler.set_timesteps(timesteps=list(range(t_star, -1, -(t_star // nfe))))

    def forward(self, x: torch.Tensor, generator: list[torch.Generator] | None = None) -> torch.Tensor:
        sample = 2 * x - 1
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        sample = self.scheduler.add_noise(sample, noise, torch.tensor([self.t_star]))
        for t in self.scheduler.timesteps:
            eps = self.unet(sample, t).sample
            sample = self.scheduler.step(eps, t, sample, generator=generator).prev_sample
        return ((sample + 1) / 2).clamp(0, 1)


def cross_check(n_samples: int = 128, attack_options: dict | None = None) -> dict:
    """Both purifiers on the same images under the same attack: paired differences (foreign −
    native) of clean and robust expected accuracy per image, and the wall time of each run."""
    options = attack_options or {"steps": 3, "eot": 2}
    purifier = DiffusersDDPMPurifier(load_toy_unet()).eval().requires_grad_(False)
    started = time.perf_counter()
    native = bench.evaluate("dp_ddpm", "pgd_eot", n_samples=n_samples, attack_options=options)
    native_seconds = time.perf_counter() - started
    started = time.perf_counter()
    foreign = bench.evaluate(purifier, "pgd_eot", n_samples=n_samples, attack_options=options)
    foreign_seconds = time.perf_counter() - started
    draws = native.draws

    def per_image(result: bench.Result, column: str) -> list[float]:
        return (result.per_sample[column] / draws).tolist()

    return {
        "n": n_samples, "attack_options": options,
        "native": native, "foreign": foreign,
        "clean": paired_difference(per_image(foreign, "clean_correct"), per_image(native, "clean_correct")),
        "robust": paired_difference(per_image(foreign, "adv_correct"), per_image(native, "adv_correct")),
        "native_seconds": native_seconds, "foreign_seconds": foreign_seconds,
    }


if __name__ == "__main__":
    check = cross_check()
    print(check["native"])
    print(check["foreign"])
    for part in ("clean", "robust"):
        d = check[part]
        print(f"{part}: foreign - native = {d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] (n = {d['n']})")
    print(f"cost: native {check['native_seconds']:.1f} s, foreign {check['foreign_seconds']:.1f} s "
          f"({check['foreign_seconds'] / check['native_seconds']:.2f}x)")
