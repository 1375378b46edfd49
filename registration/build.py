"""``rig build-dataset SESSION... --out DIR``: registered frames → a training dataset (rig.core.dataset layout).

Samples are named ``<session-folder>-<capture-id>``. The train/test split is drawn **by scene**: all
captures of one scene id (across all given sessions) land in the same split, so no scene leaks
between them; the test split gets ``round(test_fraction · scenes)`` scenes (at least one when
there are two or more scenes and the fraction is > 0), chosen with ``--seed``.

The manifest (written last) records the lens, apertures, focus, k_cam (thin-lens, or the measured
``blur.k_cam_px``), the intrinsics at the output size, the scene of every sample, and provenance:
the sessions, their capture ids and the software version.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.core import __version__
from rig.core.dataset import MANIFEST, sample_path, write_manifest
from rig.core.errors import PartialFailure, RigError
from rig.core.imageio import atomic_write_bytes

from registration.register import FRAME_FILES, FRAME_META, is_registered

KIND_OF = {"N2_8": "defocused", "N8": "all_in_focus", "depth": "depth", "valid": "valid"}


@dataclass(frozen=True)
class FrameRef:
    """One registered frame to put into the dataset."""

    sample_id: str
    session_path: Path
    capture_id: str
    scene_id: str
    folder: Path
    meta: dict[str, Any]


def split_by_scene(scene_ids: list[str], test_fraction: float, seed: int) -> set[str]:
    """The scenes that go to the test split (a deterministic shuffle of the sorted unique ids)."""
    if not 0.0 <= test_fraction < 1.0:
        raise RigError(f"--test-fraction: expected a value in [0, 1), got {test_fraction:g}")
    scenes = sorted(set(scene_ids))
    n_test = int(round(test_fraction * len(scenes)))
    if test_fraction > 0 and n_test == 0 and len(scenes) >= 2:
        n_test = 1
    n_test = min(n_test, len(scenes) - 1) if len(scenes) > 1 else 0
    rng = random.Random(seed)
    rng.shuffle(scenes)
    return set(scenes[:n_test])


def frame_damage(session: Any, capture_id: str, folder: Path) -> str | None:
    """Why a registered frame must be left out (its raw capture fails its SHA-256 or decode check,
    or a registered image does not decode), or None when it is intact."""
    from rig.core.session import verify_image_file

    damages = session.check_capture(capture_id)
    if damages:
        return "damaged capture: " + "; ".join(f"{d.file}: {d.reason}" for d in damages)
    for name in FRAME_FILES.values():
        try:
            verify_image_file(folder / name)
        except ValueError as e:
            return f"damaged registered frame: {e}"
    return None


def collect_frames(sessions: list[Path],
                   excluded: dict[str, str] | None = None) -> tuple[list[FrameRef], list[Any]]:
    """Registered frames of the intact completed captures of each session, and the opened sessions;
    damaged captures go into ``excluded`` ({sample id: reason}) instead."""
    import yaml

    from registration.register import open_session

    frames: list[FrameRef] = []
    opened = []
    names: dict[str, int] = {}
    excluded = {} if excluded is None else excluded
    for sp in sessions:
        session = open_session(sp)
        opened.append(session)
        caps = [cid for cid, e in session.latest().items() if e["status"] == "ok"]
        if not caps:
            raise RigError(f"{session.path}: no completed captures (empty session)")
        base = Path(session.path).resolve().name
        names[base] = names.get(base, 0) + 1
        prefix = base if names[base] == 1 else f"{base}{names[base]}"
        found = 0
        for cid in caps:
            folder = session.registered_dir(cid)
            if not is_registered(folder):
                continue
            reason = frame_damage(session, cid, folder)
            if reason is not None:
                excluded[f"{prefix}-{cid}"] = reason
                found += 1
                continue
            cap = session.read_capture(cid)
            meta = yaml.safe_load((folder / FRAME_META).read_text()) or {}
            frames.append(FrameRef(sample_id=f"{prefix}-{cap.capture_id}", session_path=Path(session.path),
                                   capture_id=cap.capture_id, scene_id=str(cap.scene_id), folder=folder, meta=meta))
            found += 1
        if found == 0:
            raise RigError(f"{session.path}: no registered frames; run `rig register {session.path}` first")
    return frames, opened


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RigError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        what = "a dataset" if (out / MANIFEST).is_file() else "not empty"
        raise RigError(f"{out}: folder is {what}; choose a new --out folder")


def build_manifest(frames: list[FrameRef], splits: dict[str, str], sessions: list[Any], test_scenes: set[str],
                   test_fraction: float, seed: int, name: str) -> dict[str, Any]:
    from rig.core.optics import k_cam_px

    cfg = sessions[0].config
    for s in sessions[1:]:
        c = s.config
        if (c.dslr.focal_mm, c.dslr.f_number_defocused, c.dslr.f_number_all_in_focus, tuple(c.output.size_px)) != (
                cfg.dslr.focal_mm, cfg.dslr.f_number_defocused, cfg.dslr.f_number_all_in_focus, tuple(cfg.output.size_px)):
            raise RigError(f"{s.path}: its lens, apertures or output size differ from {sessions[0].path}; "
                           "build one dataset per rig setup")
    by_path = {str(Path(s.path)): s for s in sessions}

    def kcam(focus_m: float, sess: Any) -> dict[str, float]:
        c = sess.config
        if c.blur.k_cam_px is not None:  # measured by `rig calibrate blur`
            ratio = c.dslr.f_number_defocused / c.dslr.f_number_all_in_focus
            return {"defocused": round(float(c.blur.k_cam_px), 6),
                    "all_in_focus": round(float(c.blur.k_cam_px) * ratio, 6)}
        return {"defocused": round(k_cam_px(c.lens("defocused", focus_m)), 6),
                "all_in_focus": round(k_cam_px(c.lens("all_in_focus", focus_m)), 6)}

    samples: dict[str, Any] = {}
    intr_set = set()
    focus_set = set()
    for f in frames:
        sess = by_path[str(f.session_path)]
        focus = float(f.meta.get("focus_m") or sess.config.dslr.focus_m)
        focus_set.add(focus)
        intr = f.meta.get("intrinsics") or {}
        intr_set.add(tuple(sorted((k, str(v)) for k, v in intr.items())))
        samples[f.sample_id] = {"split": splits[f.sample_id], "session": str(Path(f.session_path).resolve()),
                                "capture_id": f.capture_id, "scene_id": f.scene_id, "focus_m": focus,
                                "k_cam_px": kcam(focus, sess), "intrinsics": intr,
                                "alignment": f.meta.get("alignment"), "depth": f.meta.get("depth")}
    one_focus = focus_set.pop() if len(focus_set) == 1 else None
    first_intr = frames[0].meta.get("intrinsics") if len(intr_set) == 1 else None
    counts = {sp: sum(1 for v in splits.values() if v == sp) for sp in ("train", "test")}
    scenes = {sid: s["scene_id"] for sid, s in samples.items()}
    return {
        "name": name,
        "description": "registered DSLR + depth-sensor captures, built with `rig build-dataset`",
        "rig_config": cfg.name,
        "lens": {"focal_mm": cfg.dslr.focal_mm, "pixel_um": cfg.dslr.pixel_um,
                 "sensor_px": list(cfg.dslr.sensor_px), "downsample": round(cfg.downsample, 6),
                 "model": cfg.dslr.model},
        "apertures": {"defocused": cfg.dslr.f_number_defocused, "all_in_focus": cfg.dslr.f_number_all_in_focus},
        "focus_m": one_focus,
        "k_cam_px": kcam(one_focus, sessions[0]) if one_focus is not None else None,
        "k_cam_source": "measured (blur.k_cam_px)" if cfg.blur.k_cam_px is not None else "thin-lens model",
        "blur": {"psf": cfg.blur.psf, "rho": cfg.blur.rho, "gamma_px": cfg.blur.gamma_px},
        "output_size_px": list(cfg.output.size_px),
        "intrinsics": first_intr,
        "depth": {"units": "mm (16-bit PNG), 0 = unknown", "hole_filled": True,
                  "frame": "DSLR all-in-focus shot at the output size"},
        "valid_codes": {"255": "measured", "128": "filled", "0": "unknown"},
        "split_by": "scene",
        "split": {"test_fraction": test_fraction, "seed": seed, "test_scenes": sorted(test_scenes),
                  "train_scenes": sorted({f.scene_id for f in frames} - test_scenes)},
        "splits": {"train": {"count": counts["train"]}, "test": {"count": counts["test"]}},
        "scenes": scenes,
        "samples": samples,
        "provenance": {
            "software": f"deep-dfd-rig {__version__}",
            "sessions": [{"path": str(Path(s.path).resolve()), "snapshot_id": s.snapshot_id, "rig_config": s.config.name,
                          "captures": sorted(f.capture_id for f in frames if str(f.session_path) == str(Path(s.path)))}
                         for s in sessions],
        },
    }


def build_dataset(sessions: list[Path], out: Path, test_fraction: float = 0.2, seed: int = 0,
                  progress: bool = False) -> dict[str, Any]:
    """Copy the registered frames into ``out`` (split by scene) and write the manifest last."""
    out = Path(out)
    if not sessions:
        raise RigError("give at least one session folder")
    excluded: dict[str, str] = {}
    frames, opened = collect_frames([Path(s) for s in sessions], excluded)
    if not frames:
        raise PartialFailure(f"every registered frame is damaged ({len(excluded)}; first: "
                       f"{next(iter(excluded.values()), '')}); nothing to build")
    _check_out(out)
    test_scenes = split_by_scene([f.scene_id for f in frames], test_fraction, seed)
    splits = {f.sample_id: ("test" if f.scene_id in test_scenes else "train") for f in frames}
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        bar = Progress(TextColumn("[bold]build-dataset[/bold] {task.description}"), BarColumn(),
                       MofNCompleteColumn())
        bar.start()
        task = bar.add_task("", total=len(frames))
    try:
        for f in frames:
            if bar is not None:
                bar.update(task, description=f.sample_id)
            for kind, frame_kind in KIND_OF.items():
                src = f.folder / FRAME_FILES[frame_kind]
                atomic_write_bytes(sample_path(out, splits[f.sample_id], kind, f.sample_id), src.read_bytes())
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    manifest = build_manifest(frames, splits, opened, test_scenes, test_fraction, seed, out.resolve().name)
    if excluded:
        manifest["excluded"] = dict(sorted(excluded.items()))
    write_manifest(out, manifest)
    return manifest
