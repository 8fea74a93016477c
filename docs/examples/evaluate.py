"""Evaluating defenses from Python: a registered name, a Defense object, and a foreign purifier.

Run it as ``python docs/examples/evaluate.py`` (about half a minute on a laptop CPU); the test
suite runs it too (``tests/test_api.py``).
"""

import torch

import bench

# 1. A registered defense, as `bench run` would evaluate it (the toy suite and its protocol),
#    here with a short attack so that the example is quick.
result = bench.evaluate("dp_ddpm", "pgd_eot", n_samples=16, attack_options={"steps": 5, "eot": 2})
print(result)
print("robust accuracy:", result.robust_acc, "| Rob(10):", result.rob_m[-1].value)
print(result.per_sample[["index", "label", "clean_correct", "adv_correct"]].head())

# 2. Any purifier that draws its own randomness: here a Gaussian-noise "purifier". The harness
#    seeds torch's RNG per sample and per draw, so the numbers are reproducible and do not depend
#    on the batch.
def noisy_purifier(x: torch.Tensor) -> torch.Tensor:
    return (x + 0.2 * torch.randn_like(x)).clamp(0, 1)


foreign = bench.evaluate(noisy_purifier, "pgd_eot", n_samples=16, attack_options={"steps": 5, "eot": 2})
print(foreign)
print("re-run of 4 images alone, differing indices:", foreign.verify(samples=4))
