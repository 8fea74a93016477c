"""The README's plug-in example is real code that satisfies the defense contract."""

import re
from pathlib import Path

import torch

from bench.core.defense import DEFENSES
from bench.core.noise import NoiseSource

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_defense_example_registers_and_purifies() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if '@register_defense("my_defense")' in b)
    try:
        exec(compile(example, "README.md", "exec"), {})
        cls = DEFENSES.get("my_defense")
        defense = cls.pretrained("toy", cls.config_cls())
        x = torch.rand(3, 1, 8, 8)
        spec = defense.noise_spec((1, 8, 8))
        noise = NoiseSource(0).batch(spec, [0, 1, 2], [{s: ("k",) for s in spec}] * 3)
        out = defense.purify(x, noise)
        assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
        assert not torch.equal(out, x)
    finally:
        DEFENSES.unregister("my_defense")
