"""mlmm's ML potential plugins, one module per model family (installed as ``mlmm_plugins``).

Each module defines a :class:`mlmm.potentials.PotentialPlugin` registered in the
``mlmm.potentials`` entry-point group of pyproject.toml: ``aimnet2``, ``torchscript``,
``ani2x`` and ``mace-off``.
"""
