"""The foundation every stage shares: config and its schema, optics, layered defocus, records, the
session store, the dataset layout, image I/O, public-dataset readers and errors.

``rig.core`` imports nothing else from the project (see ARCHITECTURE.md); every other package may
import it.
"""

__version__ = "0.1.0"
