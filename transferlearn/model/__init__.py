"""Models: loading and weights, heads, the anatomy (stages, no-decay names, data config), freezing,
pinned BatchNorm and parameter groups. Imports only ``transferlearn.base``. See docs/architecture.md."""

__all__: list[str] = []
