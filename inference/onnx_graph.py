"""The deployed ONNX files' shared vocabulary: tensor names, file layout, metadata and graph edits.

Both sides of deployment use it: :mod:`inference.export` writes the graphs and
:mod:`inference.engine` runs them. Keeping it here lets the engine read exported files without
importing the exporter (which imports the engine for its MC-dropout check): the import graph stays
one-way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rig.core.errors import RigError

INPUT_NAME = "rgb"
DEPTH_OUTPUT = "depth_m"
ALEATORIC_OUTPUT = "aleatoric_std_m"  # second output of a dfdnet depth graph
MOMENTS_OUTPUTS = ("depth_m", "std_m")  # the moments graph: mean depth and epistemic std


def _write_model(path: Path, data: bytes) -> None:
    """Atomic write, then the usual permissions (mkstemp creates files 0600)."""
    import os

    from rig.core.imageio import atomic_write_bytes

    atomic_write_bytes(path, data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def toposort_graph(graph: Any) -> None:
    """Reorder ``graph.node`` in place so every node comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise RigError("ONNX graph has a cycle or an input no node produces: "
                           f"{rest[0].op_type} {rest[0].name}")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def reseed_dropout(model_bytes: bytes, offset: int) -> bytes:
    """The same graph with every RandomUniformLike seed shifted by ``offset`` (independent masks)."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    for node in model.graph.node:
        if node.op_type == "RandomUniformLike":
            for a in node.attribute:
                if a.name == "seed":
                    a.f = float(a.f + offset)
    return model.SerializeToString()


def set_onnx_meta(path: str | Path, values: dict[str, str]) -> None:
    """Add or replace metadata_props entries of an ONNX file (rewritten atomically)."""
    import onnx

    model = onnx.load(str(path))
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for k, v in sorted([*keep, *values.items()]):
        p = model.metadata_props.add()
        p.key, p.value = k, str(v)
    _write_model(Path(path), model.SerializeToString())


def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    """The ``rig.*`` metadata of an exported graph (JSON values decoded), without loading weights."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise RigError(f"{p}: no such ONNX file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 — any unreadable file is a user error
        raise RigError(f"{p}: not a readable ONNX model ({str(e).strip().splitlines()[0][:120]})") from None
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        if not prop.key.startswith("rig."):
            continue
        key = prop.key[4:]
        try:
            out[key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[key] = prop.value
    return out


def companion_paths(depth_path: str | Path) -> tuple[Path, Path]:
    """FILE.onnx -> (FILE.trunk.onnx, FILE.decoder.onnx)."""
    p = Path(depth_path)
    stem = p.name[:-5] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.trunk.onnx"), p.with_name(f"{stem}.decoder.onnx")


def moments_path(depth_path: str | Path) -> Path:
    """FILE.onnx -> FILE.moments.onnx (sampling-free MC-dropout graph)."""
    p = Path(depth_path)
    stem = p.name[:-5] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.moments.onnx")
