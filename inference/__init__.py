"""Inference: D3-Net, training, evaluation, MC-dropout, ONNX export, the live loop.

Notebook entry point: ``from inference import DepthModel`` (see :mod:`inference.api`).
"""

from inference.api import DepthModel

__all__ = ["DepthModel"]
