"""Inference: D3-Net, training, evaluation, MC-dropout, ONNX export, the live loop."""
