"""``rig compare``: outdoor qualitative comparison (paper 1 Fig. 13) as an HTML page.

For a folder of DSLR pairs (the f/2.8 shot and the f/8 shot of each scene, any sub-folders), shots
are paired by EXIF capture time (DateTimeOriginal + SubSecTimeOriginal) and aperture (FNumber):
each shot is classed as defocused or all-in-focus by the f-number nearest to the rig config's, and
pairs are taken one-to-one by smallest time gap within a tolerance (never by file order: in the
published outdoor set DSC_0008 (f/2.8) goes with DSC_0007 (f/8)). Each pair is area-downsampled to
the output size (645x432 for the D200), then

* the N=2.8 model predicts depth from the f/2.8 image, the N=8 model from the f/8 image;
* the classical baseline (Zhuo & Sim 2011, :mod:`inference.baseline_zhuo`) estimates the defocus
  map of the f/2.8 image (and thin-lens depth at the config's focus, which EXIF does not record);

and ``index.html`` shows inputs and results side by side (PNG files next to it; the models' depth
maps share one colour scale per scene; 16-bit millimetre depth PNGs in ``depth/``).
EXIF is read with exifread here (inference does not import the acquisition stage).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from rig.core.errors import RigError
from rig.core.imageio import RAW_EXTS

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", *RAW_EXTS)
DEFAULT_MODEL_N2_8 = "dfd-n2.8"
DEFAULT_MODEL_N8 = "dfd-n8"
DEFAULT_TOLERANCE_S = 60.0


@dataclass(frozen=True)
class Shot:
    """One image file and the EXIF fields used for pairing (None when absent)."""

    path: Path
    time: datetime | None
    f_number: float | None
    exposure_s: float | None = None
    focal_mm: float | None = None
    model: str | None = None


@dataclass(frozen=True)
class ShotPair:
    """A scene: the defocused (small N) and the all-in-focus (large N) shot; gap in seconds."""

    defocused: Shot
    all_in_focus: Shot
    gap_s: float

    @property
    def name(self) -> str:
        return f"{self.defocused.path.stem}_{self.all_in_focus.path.stem}"


# -------------------------------------------------------------------------------------- EXIF
def _ratio(tag: Any) -> float | None:
    vals = getattr(tag, "values", tag)
    for _ in range(2):  # a list of Ratio; DOUBLE values come as [(x,)]
        if isinstance(vals, (list, tuple)):
            if not vals:
                return None
            vals = vals[0]
    try:
        num, den = getattr(vals, "numerator", None), getattr(vals, "denominator", None)
        v = float(num) / float(den) if num is not None and den else float(vals)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _text(tag: Any) -> str | None:
    if tag is None:
        return None
    vals = getattr(tag, "values", tag)
    if isinstance(vals, bytes):
        vals = vals.decode("ascii", errors="replace")
    s = str(vals).strip().strip("\x00").strip()
    return s or None


def exif_time(date_time: str | None, subsec: str | None) -> datetime | None:
    """'YYYY:MM:DD HH:MM:SS' + SubSecTimeOriginal digits ('41' = .41 s) -> datetime, or None."""
    if not date_time:
        return None
    try:
        t = datetime.strptime(date_time.strip()[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    digits = "".join(c for c in (subsec or "") if c.isdigit())
    if digits:
        t = t.replace(microsecond=int(digits[:6].ljust(6, "0")))
    return t


def read_shot(path: Path) -> Shot:
    """EXIF capture time, FNumber, exposure, focal length, model of an image (None when absent)."""
    import exifread

    try:
        with open(path, "rb") as fh:
            tags = exifread.process_file(fh, details=False)
    except OSError as e:
        raise RigError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception:  # noqa: BLE001 — a corrupt EXIF block means "no EXIF"
        tags = {}

    def get(name: str) -> Any:
        return tags.get(f"EXIF {name}") or tags.get(f"Image {name}")

    return Shot(path=Path(path),
                time=exif_time(_text(get("DateTimeOriginal")), _text(get("SubSecTimeOriginal"))),
                f_number=_ratio(get("FNumber")), exposure_s=_ratio(get("ExposureTime")),
                focal_mm=_ratio(get("FocalLength")), model=_text(get("Model")))


def list_shot_files(folder: Path) -> list[Path]:
    """Images in ``folder`` and its direct sub-folders (sorted; hidden files skipped). A RAW file
    (NEF, DNG) is used when no JPEG/PNG/TIFF of the same name sits beside it (RAW+JPEG shooting)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RigError(f"{folder}: no such folder (expected DSLR pairs, e.g. N2_8/ and N8/ sub-folders)")
    files = []
    for d in [folder, *sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))]:
        files += [p for p in sorted(d.iterdir())
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS]
    developed = {(p.parent, p.stem) for p in files if p.suffix.lower() not in RAW_EXTS}
    return [p for p in files if p.suffix.lower() not in RAW_EXTS or (p.parent, p.stem) not in developed]


def pair_shots(shots: list[Shot], f_defocused: float, f_all_in_focus: float,
               tolerance_s: float = DEFAULT_TOLERANCE_S) -> tuple[list[ShotPair], list[str]]:
    """Pair defocused and all-in-focus shots by EXIF time (one-to-one, smallest gap first).

    A shot is defocused when its FNumber is nearer (in stops) to ``f_defocused`` than to
    ``f_all_in_focus``. Returns (pairs in time order, 'file: reason' for each unpaired shot).
    """
    if not 0 < f_defocused < f_all_in_focus:
        raise RigError("the defocused f-number must be below the all-in-focus one")
    unpaired: list[str] = []
    small, large = [], []
    for s in shots:
        if s.time is None or s.f_number is None:
            what = " and ".join(n for n, v in (("DateTimeOriginal", s.time), ("FNumber", s.f_number)) if v is None)
            unpaired.append(f"{s.path.name}: no EXIF {what}")
            continue
        d_small = abs(math.log2(s.f_number / f_defocused))
        d_large = abs(math.log2(s.f_number / f_all_in_focus))
        (small if d_small < d_large else large).append(s)
    cands = sorted((abs((a.time - b.time).total_seconds()), i, j)  # type: ignore[operator]
                   for i, a in enumerate(small) for j, b in enumerate(large))
    used_a: dict[int, tuple[int, float]] = {}
    used_b: set[int] = set()
    for gap, i, j in cands:
        if gap > tolerance_s + 1e-9:
            break
        if i in used_a or j in used_b:
            continue
        used_a[i] = (j, gap)
        used_b.add(j)
    pairs = [ShotPair(small[i], large[j], gap) for i, (j, gap) in used_a.items()]
    pairs.sort(key=lambda p: p.defocused.time)  # type: ignore[arg-type, return-value]
    unpaired += [f"{s.path.name}: f/{s.f_number:g}, no f/{f_all_in_focus:g} shot within {tolerance_s:g} s"
                 for i, s in enumerate(small) if i not in used_a]
    unpaired += [f"{s.path.name}: f/{s.f_number:g}, no f/{f_defocused:g} shot within {tolerance_s:g} s"
                 for j, s in enumerate(large) if j not in used_b]
    return pairs, unpaired


def downsample_to(rgb: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Area-downsample (cv2.INTER_AREA) to exactly ``size_wh``; images already that size pass through.

    RigError when the image is smaller than the target or its aspect ratio differs by more than 2%
    (a portrait shot, a crop)."""
    import cv2

    h, w = rgb.shape[:2]
    tw, th = int(size_wh[0]), int(size_wh[1])
    if (w, h) == (tw, th):
        return rgb
    if w < tw or h < th:
        raise RigError(f"image {w}x{h} is smaller than the output size {tw}x{th}")
    if abs((w / h) / (tw / th) - 1.0) > 0.02:
        raise RigError(f"image {w}x{h} does not have the output aspect ratio {tw}x{th} (rotated or cropped?)")
    return cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------------------------- report
@dataclass
class SceneResult:
    pair: ShotPair
    files: dict[str, str]  # column -> PNG name relative to the page
    stats: dict[str, float]


def _fmt_shot(s: Shot) -> str:
    parts = [s.path.name]
    if s.f_number:
        parts.append(f"f/{s.f_number:g}")
    if s.exposure_s:
        parts.append(f"1/{1 / s.exposure_s:.0f} s" if s.exposure_s < 1 else f"{s.exposure_s:g} s")
    if s.time:
        parts.append(s.time.strftime("%H:%M:%S.%f")[:-4])
    return ", ".join(parts)


COLUMNS = (("in_n2_8", "f/2.8 input"), ("in_n8", "f/8 input"), ("depth_n2_8", "N=2.8 model depth"),
           ("depth_n8", "N=8 model depth"), ("zhuo_blur", "Zhuo &amp; Sim defocus map"))


def write_html(out_dir: Path, scenes: list[SceneResult], meta: dict[str, Any], unpaired: list[str]) -> Path:
    """index.html: one row per scene, the PNGs side by side, settings and unpaired files listed."""
    from rig.core.imageio import atomic_write_bytes

    esc = html.escape
    rows = []
    for sc in scenes:
        cells = []
        for key, title in COLUMNS:
            f = sc.files.get(key)
            cap = {"depth_n2_8": f"median {sc.stats.get('median_n2_8_m', float('nan')):.2f} m",
                   "depth_n8": f"median {sc.stats.get('median_n8_m', float('nan')):.2f} m",
                   "zhuo_blur": f"median ε {sc.stats.get('median_blur_px', float('nan')):.2f} px"}.get(key, "")
            img = f'<img src="{esc(f)}" alt="{title}">' if f else "(not run)"
            cells.append(f"<td>{img}<div class=cap>{cap}</div></td>")
        rows.append(f"<tr><th colspan={len(COLUMNS)} class=scene>{esc(sc.pair.name)}: "
                    f"{esc(_fmt_shot(sc.pair.defocused))} ↔ {esc(_fmt_shot(sc.pair.all_in_focus))} "
                    f"(Δt {sc.pair.gap_s:.1f} s); depth scale {sc.stats['lo_m']:.2f}–{sc.stats['hi_m']:.2f} m "
                    f"(viridis, near = dark)</th></tr><tr>{''.join(cells)}</tr>")
    head = "".join(f"<th>{t}</th>" for _, t in COLUMNS)
    settings = "".join(f"<li>{esc(k)}: {esc(str(v))}</li>" for k, v in meta.items())
    unp = ("<h2>Not paired</h2><ul>" + "".join(f"<li>{esc(u)}</li>" for u in unpaired) + "</ul>") if unpaired else ""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Outdoor comparison</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse}}
td,th{{padding:3px;vertical-align:top;text-align:center}} img{{width:300px}} .cap{{font-size:80%;color:#444}}
th.scene{{text-align:left;font-weight:normal;background:#eee}}</style></head><body>
<h1>Outdoor depth: DFD networks vs. the classical baseline (paper 1 Fig. 13)</h1>
<p>{len(scenes)} scene(s). Model depth maps of a scene share one colour scale; the baseline's defocus map shows the
blur-circle diameter ε in pixels (magma, 0 = sharp), since the focus distance of these shots is not in EXIF.</p>
<table><tr>{head}</tr>{''.join(rows)}</table>
<h2>Settings</h2><ul>{settings}</ul>{unp}
</body></html>
"""
    path = Path(out_dir) / "index.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def compare_pairs(pairs_dir: Path, out_dir: Path, model_n2_8: str = DEFAULT_MODEL_N2_8,
                  model_n8: str = DEFAULT_MODEL_N8, cfg: Any = None, tolerance_s: float = DEFAULT_TOLERANCE_S,
                  device: str = "cpu", baseline: bool = True, baseline_params: Any = None, side: str = "far",
                  printer: Any = print) -> dict[str, Any]:
    """Pair, downsample, predict with both models and the baseline, write PNGs + index.html.

    Returns {'index', 'scenes': [{name, defocused, all_in_focus, gap_s, files, stats}], 'unpaired'}.
    """
    from inference import baseline_zhuo as zb
    from inference.model import load_model
    from inference.predict import colorize, predict_image
    from rig.core.config import load_rig_config
    from rig.core.imageio import read_rgb, write_depth_mm, write_image

    cfg = cfg if cfg is not None else load_rig_config(zb.DEFAULT_CONFIG)
    shots = [read_shot(p) for p in list_shot_files(pairs_dir)]
    if not shots:
        raise RigError(f"{pairs_dir}: no images ({', '.join(IMAGE_EXTS)}) in the folder or its sub-folders")
    pairs, unpaired = pair_shots(shots, cfg.dslr.f_number_defocused, cfg.dslr.f_number_all_in_focus, tolerance_s)
    if not pairs:
        raise RigError(f"{pairs_dir}: no f/{cfg.dslr.f_number_defocused:g} + f/{cfg.dslr.f_number_all_in_focus:g} "
                       f"pairs within {tolerance_s:g} s ({'; '.join(unpaired[:3])})")
    net_a = load_model(model_n2_8, device=device)
    net_b = load_model(model_n8, device=device)
    size = tuple(int(v) for v in cfg.output.size_px)
    out_dir = Path(out_dir)
    scenes: list[SceneResult] = []
    for pair in pairs:
        name = pair.name
        a = downsample_to(read_rgb(pair.defocused.path), size)  # type: ignore[arg-type]
        b = downsample_to(read_rgb(pair.all_in_focus.path), size)  # type: ignore[arg-type]
        da = predict_image(net_a.model, a, device=device).depth_m
        db = predict_image(net_b.model, b, device=device).depth_m
        both = np.concatenate([da.ravel(), db.ravel()])
        lo, hi = float(np.percentile(both, 1)), float(np.percentile(both, 99))
        files = {"in_n2_8": f"{name}_f2_8.jpg", "in_n8": f"{name}_f8.jpg",
                 "depth_n2_8": f"{name}_depth_n2_8.png", "depth_n8": f"{name}_depth_n8.png"}
        write_image(out_dir / files["in_n2_8"], a)
        write_image(out_dir / files["in_n8"], b)
        write_image(out_dir / files["depth_n2_8"], colorize(da, lo, max(hi, lo + 1e-3)))
        write_image(out_dir / files["depth_n8"], colorize(db, lo, max(hi, lo + 1e-3)))
        write_depth_mm(out_dir / "depth" / f"{name}_n2_8.png", da)
        write_depth_mm(out_dir / "depth" / f"{name}_n8.png", db)
        stats = {"lo_m": lo, "hi_m": hi, "median_n2_8_m": float(np.median(da)), "median_n8_m": float(np.median(db))}
        if baseline:
            res = zb.estimate_for_config(a, cfg, side, baseline_params)
            k = float(res.info["k_cam_px"])
            files["zhuo_blur"] = f"{name}_zhuo_blur.png"
            write_image(out_dir / files["zhuo_blur"], colorize(res.blur_px + 1e-6, lo=0.0, hi=k, cmap="magma"))
            write_depth_mm(out_dir / "depth" / f"{name}_zhuo_{side}.png", res.depth_m)
            stats["median_blur_px"] = float(np.median(res.blur_px))
        scenes.append(SceneResult(pair, files, stats))
        printer(f"{name}: Δt {pair.gap_s:.1f} s, median depth N=2.8 {stats['median_n2_8_m']:.2f} m, "
                f"N=8 {stats['median_n8_m']:.2f} m" + (f", baseline median ε {stats['median_blur_px']:.2f} px"
                                                      if baseline else ""))
    meta = {"pairs folder": str(pairs_dir), "N=2.8 model": str(net_a.path), "N=8 model": str(net_b.path),
            "rig config": f"{cfg.name} (focus {cfg.dslr.focus_m:g} m for the baseline's depth PNGs)",
            "output size": f"{size[0]}x{size[1]} (cv2.INTER_AREA)", "pairing tolerance": f"{tolerance_s:g} s"}
    index = write_html(out_dir, scenes, meta, unpaired)
    return {"index": str(index), "unpaired": unpaired,
            "scenes": [{"name": s.pair.name, "defocused": str(s.pair.defocused.path),
                        "all_in_focus": str(s.pair.all_in_focus.path), "gap_s": s.pair.gap_s,
                        "files": s.files, "stats": s.stats} for s in scenes]}
