"""Data: the one image reader, preprocessing transforms, decoded-image caches, folder datasets and
batch handling. Imports ``base`` and ``model`` only. See docs/architecture.md."""

__all__: list[str] = []
