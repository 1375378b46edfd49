"""Relative-depth ("Depth in the Wild") annotations, Chen et al.'s ranking loss, WHDR, finetuning.

Annotations are point pairs (A, B) in an image with an ordinal relation r: '>' = A is farther than B
(r = +1), '<' = A is closer (r = −1), '=' = same depth (r = 0). Three file formats are read
(:func:`load_annotations`):

* the DIW release's CSV (Chen et al. 2016, e.g. ``DIW_test.csv``): per image two lines, the image
  path, then ``y_A,x_A,y_B,x_B,relation,width,height`` with 1-based pixel coordinates (the Torch
  code indexes the output tensor with them directly); only the first five fields are used;
* a pair CSV with a header ``image,xA,yA,xB,yB,relation[,weight]`` (0-based pixels, any number of
  rows per image) — what :func:`write_pairs_csv` and ``rig diw-pairs`` write;
* JSON: a list of ``{"image", "xA", "yA", "xB", "yB", "relation"[, "weight"]}`` or
  ``{"pairs": [...]}`` with the same fields (0-based).

Loss (Chen et al. 2016, on z = log predicted depth, so it is scale-free on a metric model):
ψ = log(1 + exp(−r·(z_A − z_B))) for r = ±1 and ψ = (z_A − z_B)² for r = 0.

WHDR (weighted human disagreement rate): the weighted fraction of pairs whose predicted relation
differs from the annotation, where the prediction's relation uses the equality threshold τ of the
ground truth: '=' when max(d_A/d_B, d_B/d_A) < 1 + τ (Chen et al. use 1.02 for pairs drawn from
Kinect depth). Reported with the split into annotated-equal and annotated-ordinal pairs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from rig.core.errors import RigError

REL_FROM_CHAR = {">": 1, "<": -1, "=": 0}
CHAR_FROM_REL = {1: ">", -1: "<", 0: "="}
DEFAULT_TAU = 0.02


@dataclass
class PairSet:
    """The annotated pairs of one image. Coordinates are 0-based pixel indices (int64 arrays of
    equal length n); rel: int8 (+1 A farther, −1 A closer, 0 equal); weight: float64 (default 1)."""

    image: str
    xa: np.ndarray
    ya: np.ndarray
    xb: np.ndarray
    yb: np.ndarray
    rel: np.ndarray
    weight: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self.xa, self.ya, self.xb, self.yb = (np.asarray(v, dtype=np.int64).ravel()
                                              for v in (self.xa, self.ya, self.xb, self.yb))
        self.rel = np.asarray(self.rel, dtype=np.int8).ravel()
        n = self.xa.size
        if not (self.ya.size == self.xb.size == self.yb.size == self.rel.size == n):
            raise ValueError("pair arrays must have the same length")
        w = np.asarray(self.weight, dtype=np.float64).ravel()
        self.weight = np.ones(n) if w.size == 0 else w
        if self.weight.size != n:
            raise ValueError("weights must have one value per pair")
        if np.any(~np.isin(self.rel, (-1, 0, 1))):
            raise ValueError("relations must be +1, -1 or 0")

    def __len__(self) -> int:
        return int(self.xa.size)

    def check_inside(self, height: int, width: int, where: str = "") -> None:
        """RigError (one line) when a point lies outside a (height, width) image."""
        for name, v, hi in (("x", self.xa, width), ("y", self.ya, height), ("x", self.xb, width),
                            ("y", self.yb, height)):
            if v.size and (v.min() < 0 or v.max() >= hi):
                raise RigError(f"{where or self.image}: a pair point {name}={int(v.min() if v.min() < 0 else v.max())} "
                               f"lies outside the {width}x{height} image")


# ---------------------------------------------------------------------------------- relations
def relation_from_depths(depth_a: np.ndarray, depth_b: np.ndarray, tau: float = DEFAULT_TAU) -> np.ndarray:
    """Ordinal relation of depth pairs (> 0): +1 when d_A/d_B ≥ 1+τ, −1 when d_B/d_A ≥ 1+τ, else 0."""
    if tau < 0:
        raise ValueError("tau must be >= 0")
    a = np.asarray(depth_a, dtype=np.float64)
    b = np.asarray(depth_b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = a / b
    rel = np.zeros(ratio.shape, np.int8)
    rel[ratio >= 1.0 + tau] = 1
    rel[ratio <= 1.0 / (1.0 + tau)] = -1
    if tau == 0:
        rel[ratio == 1.0] = 0
    return rel


def make_pairs_from_depth(depth_m: np.ndarray, n_pairs: int, rng: np.random.Generator, tau: float = DEFAULT_TAU,
                          valid: np.ndarray | None = None, min_dist_px: float = 4.0, image: str = "") -> PairSet:
    """``n_pairs`` random point pairs with known depth (> 0, ``valid``) and their true relation.

    Points of a pair are at least ``min_dist_px`` apart (DIW-style pairs are far apart; adjacent
    pixels are nearly always '='). Raises RigError when the map has fewer than 2 usable pixels.
    """
    d = np.asarray(depth_m, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    if valid is not None:
        ok &= np.asarray(valid) > 0
    ys, xs = np.nonzero(ok)
    if ys.size < 2:
        raise RigError(f"{image or 'depth map'}: fewer than 2 pixels with depth; cannot sample pairs")
    if n_pairs < 1:
        raise RigError("n_pairs must be >= 1")
    xa, ya, xb, yb = [], [], [], []
    need = n_pairs
    for _ in range(50):
        i = rng.integers(0, ys.size, 2 * need)
        j = rng.integers(0, ys.size, 2 * need)
        keep = np.hypot(xs[i] - xs[j], ys[i] - ys[j]) >= max(min_dist_px, 1e-9)
        i, j = i[keep][:need], j[keep][:need]
        xa.append(xs[i]), ya.append(ys[i]), xb.append(xs[j]), yb.append(ys[j])
        need -= i.size
        if need <= 0:
            break
    if need > 0:
        raise RigError(f"{image or 'depth map'}: could not draw {n_pairs} pairs {min_dist_px:g} px apart")
    xa_, ya_, xb_, yb_ = (np.concatenate(v) for v in (xa, ya, xb, yb))
    rel = relation_from_depths(d[ya_, xa_], d[yb_, xb_], tau)
    return PairSet(image, xa_, ya_, xb_, yb_, rel)


# ------------------------------------------------------------------------------------ file I/O
def _rel_code(text: str, where: str) -> int:
    c = text.strip()[:1]
    if c not in REL_FROM_CHAR:
        raise RigError(f"{where}: relation must be '<', '>' or '=', got {text.strip()!r}")
    return REL_FROM_CHAR[c]


def _group(rows: Iterable[tuple[str, int, int, int, int, int, float]]) -> list[PairSet]:
    """(image, xA, yA, xB, yB, rel, weight) rows -> one PairSet per image, in first-seen order."""
    by: dict[str, list[tuple[int, int, int, int, int, float]]] = {}
    for img, *rest in rows:
        by.setdefault(img, []).append(tuple(rest))  # type: ignore[arg-type]
    out = []
    for img, items in by.items():
        a = np.array(items, dtype=np.float64)
        out.append(PairSet(img, a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5]))
    return out


def _int(text: Any, where: str) -> int:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise RigError(f"{where}: expected a pixel coordinate, got {text!r}") from None
    if not math.isfinite(v):
        raise RigError(f"{where}: expected a pixel coordinate, got {text!r}")
    return int(math.floor(v))


def parse_diw_csv(text: str, src: str = "<DIW csv>") -> list[PairSet]:
    """The DIW release's two-lines-per-image CSV (1-based y_A,x_A,y_B,x_B,relation,...)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) % 2:
        raise RigError(f"{src}: DIW format needs two lines per image (path, then y_A,x_A,y_B,x_B,relation); "
                       f"got an odd number of lines ({len(lines)})")
    rows = []
    for k in range(0, len(lines), 2):
        where = f"{src}:{k + 2}"
        f = next(csv.reader([lines[k + 1]]))
        if len(f) < 5:
            raise RigError(f"{where}: expected y_A,x_A,y_B,x_B,relation[,width,height], got {lines[k + 1]!r}")
        ya, xa, yb, xb = (_int(v, where) - 1 for v in f[:4])
        rows.append((lines[k], xa, ya, xb, yb, _rel_code(f[4], where), 1.0))
    return _group(rows)


def parse_pairs_csv(text: str, src: str = "<pairs csv>") -> list[PairSet]:
    """Header ``image,xA,yA,xB,yB,relation[,weight]`` (0-based pixels)."""
    reader = csv.DictReader(io.StringIO(text))
    need = ("image", "xA", "yA", "xB", "yB", "relation")
    if reader.fieldnames is None or any(k not in reader.fieldnames for k in need):
        raise RigError(f"{src}: pair CSV needs the header {','.join(need)}[,weight]")
    rows = []
    for i, r in enumerate(reader, start=2):
        where = f"{src}:{i}"
        w = float(r["weight"]) if r.get("weight") not in (None, "") else 1.0
        rows.append((r["image"], _int(r["xA"], where), _int(r["yA"], where), _int(r["xB"], where),
                     _int(r["yB"], where), _rel_code(r["relation"], where), w))
    return _group(rows)


def parse_pairs_json(obj: Any, src: str = "<pairs json>") -> list[PairSet]:
    """A list of pair objects, or {"pairs": [...]} (0-based pixels)."""
    items = obj.get("pairs") if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        raise RigError(f"{src}: expected a list of pairs or {{\"pairs\": [...]}}")
    rows = []
    for i, r in enumerate(items):
        where = f"{src}: pair {i}"
        if not isinstance(r, dict) or any(k not in r for k in ("image", "xA", "yA", "xB", "yB", "relation")):
            raise RigError(f"{where}: needs image, xA, yA, xB, yB, relation")
        rows.append((str(r["image"]), _int(r["xA"], where), _int(r["yA"], where), _int(r["xB"], where),
                     _int(r["yB"], where), _rel_code(str(r["relation"]), where), float(r.get("weight", 1.0))))
    return _group(rows)


def load_annotations(path: Path | str) -> list[PairSet]:
    """Read a DIW CSV, a pair CSV or a pair JSON (detected from the content). RigError on problems."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise RigError(f"{p}: cannot read annotations ({getattr(e, 'strerror', None) or e})") from None
    stripped = text.lstrip()
    if not stripped:
        raise RigError(f"{p}: empty annotation file")
    if stripped[0] in "[{":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise RigError(f"{p}: invalid JSON at line {e.lineno}: {e.msg}") from None
        sets = parse_pairs_json(obj, str(p))
    elif stripped.split("\n", 1)[0].replace(" ", "").lower().startswith("image,"):
        sets = parse_pairs_csv(stripped, str(p))
    else:
        sets = parse_diw_csv(text, str(p))
    if not sets or sum(len(s) for s in sets) == 0:
        raise RigError(f"{p}: no point pairs")
    return sets


def pairs_csv_text(sets: Sequence[PairSet]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "xA", "yA", "xB", "yB", "relation", "weight"])
    for s in sets:
        for k in range(len(s)):
            w.writerow([s.image, int(s.xa[k]), int(s.ya[k]), int(s.xb[k]), int(s.yb[k]), CHAR_FROM_REL[int(s.rel[k])],
                        f"{s.weight[k]:g}"])
    return buf.getvalue()


def write_pairs_csv(path: Path | str, sets: Sequence[PairSet]) -> Path:
    """Write the pair CSV (header image,xA,yA,xB,yB,relation,weight; 0-based) atomically."""
    from rig.core.imageio import atomic_write_bytes

    atomic_write_bytes(Path(path), pairs_csv_text(sets).encode())
    return Path(path)


def diw_csv_text(sets: Sequence[PairSet], sizes_wh: dict[str, tuple[int, int]] | None = None) -> str:
    """The DIW release format: per pair the image line then ``y_A,x_A,y_B,x_B,rel,width,height``
    (1-based; DIW has one pair per image, so an image with n pairs appears n times)."""
    out = []
    for s in sets:
        wh = (sizes_wh or {}).get(s.image)
        tail = f",{wh[0]},{wh[1]}" if wh else ""
        for k in range(len(s)):
            out.append(s.image)
            out.append(f"{int(s.ya[k]) + 1},{int(s.xa[k]) + 1},{int(s.yb[k]) + 1},{int(s.xb[k]) + 1},"
                       f"{CHAR_FROM_REL[int(s.rel[k])]}{tail}")
    return "\n".join(out) + "\n"


def merge_by_image(sets: Iterable[PairSet]) -> list[PairSet]:
    """Concatenate the pair sets of the same image (first-seen order)."""
    by: dict[str, list[PairSet]] = {}
    for s in sets:
        by.setdefault(s.image, []).append(s)
    out = []
    for img, group in by.items():
        cat = lambda a: np.concatenate([getattr(g, a) for g in group])  # noqa: E731
        out.append(PairSet(img, cat("xa"), cat("ya"), cat("xb"), cat("yb"), cat("rel"), cat("weight")))
    return out


# --------------------------------------------------------------------------------------- metric
def whdr(depth_a: np.ndarray, depth_b: np.ndarray, rel: np.ndarray, weight: np.ndarray | None = None,
         tau: float = DEFAULT_TAU) -> dict[str, float]:
    """Weighted disagreement of predicted depths (> 0) at A and B with the annotated relations.

    Returns {'whdr', 'whdr_eq' (over annotated '=' pairs), 'whdr_neq' (over '<'/'>' pairs),
    'whdr_sign', 'n_pairs', 'n_eq', 'n_neq'}; NaN where a group is empty. ``whdr_sign`` is Chen et
    al.'s sign-only WHDR (τ = 0) over the ordinal pairs: a pair is wrong only when the predicted order
    is the opposite of the annotated one, so correctly ordered near-equal pairs never count as wrong.
    """
    r = np.asarray(rel, dtype=np.int8).ravel()
    w = np.ones(r.size) if weight is None else np.asarray(weight, dtype=np.float64).ravel()
    pred = relation_from_depths(np.maximum(np.asarray(depth_a, np.float64).ravel(), 1e-12),
                                np.maximum(np.asarray(depth_b, np.float64).ravel(), 1e-12), tau)
    wrong = (pred != r).astype(np.float64)

    def rate(m: np.ndarray) -> float:
        return float((wrong[m] * w[m]).sum() / w[m].sum()) if m.any() and w[m].sum() > 0 else float("nan")

    eq = r == 0
    diff = np.asarray(depth_a, np.float64).ravel() - np.asarray(depth_b, np.float64).ravel()
    sign_wrong = (np.sign(diff) != r) & ~eq
    sign_rate = float((sign_wrong[~eq] * w[~eq]).sum() / w[~eq].sum()) if (~eq).any() and w[~eq].sum() > 0 \
        else float("nan")
    return {"whdr": rate(np.ones(r.size, bool)), "whdr_eq": rate(eq), "whdr_neq": rate(~eq), "whdr_sign": sign_rate,
            "n_pairs": int(r.size), "n_eq": int(eq.sum()), "n_neq": int((~eq).sum())}


def ranking_loss(z_a, z_b, rel):  # torch tensors -> scalar tensor
    """Chen et al. 2016: mean over pairs of log(1 + exp(−r·(z_A − z_B))) (r = ±1) or (z_A − z_B)² (r = 0).

    z: (n,) log-depth (or depth); rel: (n,) in {+1, −1, 0} (+1 = A farther).
    """
    import torch
    import torch.nn.functional as F

    diff = z_a - z_b
    r = rel.to(diff.dtype)
    ordinal = F.softplus(-r * diff)  # log(1 + exp(-r·Δ)), numerically stable
    loss = torch.where(rel == 0, diff * diff, ordinal)
    return loss.mean() if loss.numel() else diff.sum() * 0.0


# ---------------------------------------------------------------------------------- with a model
def resolve_image(images_dir: Path | None, name: str, annotations_dir: Path | None = None) -> Path:
    """The image file of an annotation: absolute, relative to ``images_dir``, or to the annotation file."""
    p = Path(name)
    cands = [p] if p.is_absolute() else []
    if images_dir is not None:
        cands += [Path(images_dir) / p, Path(images_dir) / p.name]
    if annotations_dir is not None:
        cands.append(Path(annotations_dir) / p)
    if not p.is_absolute():
        cands.append(p)
    for c in cands:
        if c.is_file():
            return c
    raise RigError(f"{name}: annotated image not found (looked in {images_dir or 'the working folder'}); "
                   "pass --images DIR")


@dataclass
class PairImage:
    """An annotated image in memory: rgb (H, W, 3) uint8 and its pairs."""

    name: str
    rgb: np.ndarray
    pairs: PairSet


def load_pair_images(sets: Sequence[PairSet], images_dir: Path | None, annotations_dir: Path | None = None,
                     scale_to_width: int | None = None) -> list[PairImage]:
    """Read each annotated image and check its pairs lie inside it.

    ``scale_to_width``: area-resize images wider than that (points scaled along)."""
    import cv2

    from rig.core.imageio import read_rgb

    out = []
    for s in merge_by_image(sets):
        rgb = read_rgb(resolve_image(images_dir, s.image, annotations_dir))
        h, w = rgb.shape[:2]
        s.check_inside(h, w)
        if scale_to_width and w > scale_to_width * 1.25:
            nw, nh = int(scale_to_width), int(round(h * scale_to_width / w))
            rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
            # pixel centres map as (v + 0.5)·n/N − 0.5; the new pixel is the one containing it
            sc = lambda v, n, big: np.minimum(np.floor((v + 0.5) * n / big).astype(np.int64), n - 1)  # noqa: E731
            s = PairSet(s.image, sc(s.xa, nw, w), sc(s.ya, nh, h), sc(s.xb, nw, w), sc(s.yb, nh, h), s.rel, s.weight)
        out.append(PairImage(s.image, rgb, s))
    return out


def predict_depth(model: Any, rgb: np.ndarray, device: str = "cpu") -> np.ndarray:
    """One deterministic pass: (H, W) float32 metres."""
    from inference.predict import predict_image

    return predict_image(model, rgb, device=device).depth_m


def evaluate_whdr(model: Any, images: Sequence[PairImage], tau: float = DEFAULT_TAU, device: str = "cpu"
                  ) -> dict[str, float]:
    """WHDR of a model's depth over all pairs of all images (pooled)."""
    da, db, rel, w = [], [], [], []
    for im in images:
        d = predict_depth(model, im.rgb, device)
        p = im.pairs
        da.append(d[p.ya, p.xa])
        db.append(d[p.yb, p.xb])
        rel.append(p.rel)
        w.append(p.weight)
    return whdr(np.concatenate(da), np.concatenate(db), np.concatenate(rel), np.concatenate(w), tau)


def _freeze_batchnorm(model: Any) -> None:
    import torch.nn as nn

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)


def _crop_with_pairs(im: PairImage, crop_px: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random crop (at most crop_px square) and the pairs fully inside it (shifted)."""
    h, w = im.rgb.shape[:2]
    ch, cw = min(crop_px, h), min(crop_px, w)
    p = im.pairs
    best = None
    for _ in range(8):  # a few tries for a crop holding pairs
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
        inside = ((p.xa >= left) & (p.xa < left + cw) & (p.xb >= left) & (p.xb < left + cw)
                  & (p.ya >= top) & (p.ya < top + ch) & (p.yb >= top) & (p.yb < top + ch))
        if best is None or inside.sum() > best[2].sum():
            best = (top, left, inside)
        if inside.sum() >= 8:
            break
    top, left, inside = best  # type: ignore[misc]
    rgb = im.rgb[top:top + ch, left:left + cw]
    return (rgb, p.xa[inside] - left, p.ya[inside] - top, p.xb[inside] - left, p.yb[inside] - top, p.rel[inside])


def finetune_diw(model_ref: Any, train: Sequence[PairImage], steps: int = 100, lr: float = 1e-5,
                 batch_images: int = 2, crop_px: int = 0, seed: int = 0, device: str = "cpu",
                 val: Sequence[PairImage] | None = None, tau: float = DEFAULT_TAU, log_every: int = 10,
                 printer: Any = print) -> tuple[Any, dict[str, Any]]:
    """Finetune a metric depth model with the ranking loss on log depth.

    model_ref: a model file / shipped name, or an already loaded :class:`inference.model.LoadedModel`.

    Adam (lr), ``steps`` steps of ``batch_images`` images each (whole images, or random crops of
    ``crop_px`` holding pairs), batch-norm statistics frozen (few images per step), dropout on.
    With ``val``, WHDR is measured before and after. Returns (LoadedModel with the new weights,
    summary dict).
    """
    import torch

    from inference.model import load_model
    from inference.predict import to_tensor

    if steps < 1:
        raise RigError("--steps: must be >= 1")
    if not train:
        raise RigError("no annotated images to train on")
    loaded = model_ref if hasattr(model_ref, "model") else load_model(model_ref, device=device)
    model = loaded.model.to(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    summary: dict[str, Any] = {"model": str(loaded.path), "arch": loaded.arch, "steps": steps, "lr": lr,
                               "batch_images": batch_images, "crop_px": crop_px, "tau": tau,
                               "n_train_images": len(train), "n_train_pairs": int(sum(len(i.pairs) for i in train))}
    if val:
        summary["val_before"] = evaluate_whdr(model, val, tau, device)
        summary["train_before"] = evaluate_whdr(model, train, tau, device)
        printer(f"before: WHDR val {summary['val_before']['whdr'] * 100:.1f}% "
                f"train {summary['train_before']['whdr'] * 100:.1f}%")
    model.train()
    _freeze_batchnorm(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(steps):
        idx = rng.choice(len(train), size=min(batch_images, len(train)), replace=False)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for i in idx:
            im = train[int(i)]
            if crop_px:
                rgb, xa, ya, xb, yb, rel = _crop_with_pairs(im, crop_px, rng)
            else:
                p = im.pairs
                rgb, xa, ya, xb, yb, rel = im.rgb, p.xa, p.ya, p.xb, p.yb, p.rel
            if xa.size == 0:
                continue
            z = torch.log(model(to_tensor(np.ascontiguousarray(rgb), device))[0, 0].clamp_min(1e-4))
            t = lambda a: torch.from_numpy(np.asarray(a)).to(device)  # noqa: E731
            loss = ranking_loss(z[t(ya), t(xa)], z[t(yb), t(xb)], t(rel.astype(np.int64))) / len(idx)
            loss.backward()
            total += float(loss.detach())
        opt.step()
        losses.append(total)
        if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            printer(f"step {step + 1}/{steps}: ranking loss {np.mean(losses[-log_every:]):.4f}")
    model.eval()
    summary["seconds"] = time.perf_counter() - t0
    summary["loss_first"] = float(np.mean(losses[: max(1, min(10, len(losses)))]))
    summary["loss_last"] = float(np.mean(losses[-max(1, min(10, len(losses))):]))
    if val:
        summary["val_after"] = evaluate_whdr(model, val, tau, device)
        summary["train_after"] = evaluate_whdr(model, train, tau, device)
        printer(f"after:  WHDR val {summary['val_after']['whdr'] * 100:.1f}% "
                f"train {summary['train_after']['whdr'] * 100:.1f}%")
    return loaded, summary


def save_finetuned(loaded: Any, path: Path, summary: dict[str, Any]) -> Path:
    """Write ``{'arch', 'state_dict', 'meta'}`` (loadable by :func:`inference.model.load_model`);
    the meta keeps the source model's and records the finetuning (depth is now relative)."""
    import torch

    from rig.core.imageio import atomic_write_bytes

    meta = dict(loaded.meta)
    meta["finetune"] = {"kind": "diw-ranking", "from": str(loaded.path),
                        **{k: v for k, v in summary.items() if not isinstance(v, dict)}}
    meta["relative_depth"] = True
    buf = io.BytesIO()
    sd = {k: v.detach().cpu() for k, v in loaded.model.state_dict().items()}
    torch.save({"arch": loaded.arch, "state_dict": sd, "meta": _jsonable(meta)}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ----------------------------------------------------------------------------------- pairs files
def pairs_from_dataset(data_dir: Path | str, split: str, n_pairs: int, seed: int = 0, tau: float = DEFAULT_TAU,
                       input_kind: str = "N2_8", limit: int | None = None, min_dist_px: float = 4.0,
                       ids: Sequence[str] | None = None) -> list[PairSet]:
    """``n_pairs`` pairs per depth map of a rig.core.dataset split; image names = '<kind>/<id>.png'
    relative to the split folder (pass ``--images DATA/SPLIT``)."""
    from rig.core import dataset as rds

    root = Path(data_dir)
    rds.read_manifest(root)
    all_ids = list(ids) if ids is not None else rds.list_samples(root, split)
    if not all_ids:
        raise RigError(f"{root}: split {split!r} has no samples")
    all_ids = all_ids[:limit] if limit else all_ids
    rng = np.random.default_rng(seed)
    out = []
    for sid in all_ids:
        s = rds.read_sample(root, split, sid, kinds=("depth", "valid"))
        out.append(make_pairs_from_depth(s.depth_m, n_pairs, rng, tau, s.valid, min_dist_px,
                                         image=f"{input_kind}/{sid}.png"))
    return out
