"""bench: a benchmark harness for diffusion-based purification (DBP) defenses.

``bench.core`` owns the contracts (the noise contract, attacker-knowledge settings, plug-in
registries, Defense/Attack bases, the target an attack sees, memory planning, metrics);
``bench.families`` the diffusion maths; ``bench.zoo`` model files and data; ``bench.training``
ADDT and toy training; ``bench.harness`` running and storing evaluations; ``bench.publish``
records and the leaderboard; ``bench.cli`` the command line. Defenses and attacks are plug-ins in
the top-level ``defenses`` and ``attacks`` packages (or any installed package, via entry points).
"""

__version__ = "0.1.0"
