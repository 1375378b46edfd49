"""Deep-DFD camera rig: capture, registration and depth-from-defocus inference."""

__version__ = "0.1.0"
