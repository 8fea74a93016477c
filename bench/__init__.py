"""bench: a benchmark harness for diffusion-based purification (DBP) defenses.

The core (this package) owns the noise contract, the attacker-knowledge settings, the
evaluation protocol and the result store; defenses and attacks are plug-ins in the
top-level ``defenses`` and ``attacks`` packages.
"""

__version__ = "0.1.0"
