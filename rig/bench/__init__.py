"""``rig bench``: measurements of each stage (application layer: each module may import any stage).

``synth`` (layered defocus), ``capture`` (capture-loop overhead), ``register`` (registration and
hole filling against analytic scenes), ``infer`` (torch, onnxruntime, MC-dropout; with ``deploy``).
"""
