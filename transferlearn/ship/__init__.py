"""Shipping: the saved classifier and its file format, the evaluation report and its pictures, ONNX
export. Imports ``base``, ``model``, ``data`` and ``train``. See docs/architecture.md."""

__all__: list[str] = []
