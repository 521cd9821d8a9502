"""Training: the Trainer loop, its settings, the feature cache, evaluation, loaders and samplers,
distributed runs, checkpoints, history, best-epoch selection and the strategy table. Imports
``base``, ``model`` and ``data``. See docs/architecture.md."""

__all__: list[str] = []
