"""Deep-DFD camera rig: capture, registration and depth-from-defocus inference.

``rig.core`` is the foundation every stage imports; the rest of ``rig`` is the application layer
(the CLI, live, replay, demo, bench, experiments). See ARCHITECTURE.md.
"""

from rig.core import __version__

__all__ = ["__version__"]
