"""Camera-independent depth from defocus (Wijayasingha et al., paper 2, Fig. 2).

Two small U-Nets:

1. the *blur network* predicts the per-pixel Gaussian blur λ (px, output resolution) from the
   defocused RGB;
2. the blur is corrected for the camera: σ_defocus = √(λ² − γ²) (γ: the in-focus blur) and divided
   by the camera constant, b = σ_defocus / (ρ·k_cam) — which equals |d − d_f|/d, independent of the
   camera (rig.core.optics: σ = ρ·ε, ε = k_cam·|d − d_f|/d, so paper 2's k_cam is ρ·k_cam_px here);
3. the *depth network* takes the corrected blur b together with the RGB and the blur network's
   encoder features (skip connections) and predicts depth (log-depth head).

Every step of the correction is out-of-place: the public code's pitfall (an in-place edit that
makes the "corrected" blur the uncorrected one) is guarded by tests/test_camind.py (depth changes
with k_cam, ∂depth/∂k_cam ≠ 0, corrected ≠ uncorrected).

Loss: L = L_depth + b_weight·L_blur, L_depth = mean |log d̂ − log d|, L_blur = mean |λ − √(σ_gt² + γ²)|
with σ_gt = ρ·k_cam·|d − d_f|/d (:func:`blur_target_px`): λ is the blur the image shows, defocus and
the in-focus blur γ together, so the γ removed by the correction is removed exactly once.

:func:`run_cross_camera_experiment` trains on some cameras (k_cam values) and tests on others,
for three variants (paper 2 Table 3): no k_cam (the blur goes uncorrected to the depth network),
ground-truth k_cam, and an estimated k_cam (e.g. from ``rig calibrate blur``) at test time.
Inputs are arrays (images + depth), so this module imports no acquisition code.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rig.core import optics

METRICS = ("delta1", "delta2", "delta3", "rel", "rms", "log10")


# ------------------------------------------------------------------------------------------ model
def _conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
                         nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class SmallUNet(nn.Module):
    """``levels``-level U-Net: (B, in_ch, H, W) -> (B, out_ch, H, W) (H, W multiples of 2^(levels−1)),
    channels base·2^i at level i, with optional extra skip features ``extra`` (one map per level, at
    1, 1/2, 1/4, … resolution) concatenated at each level. ``levels`` 3 is paper 2's small net; more
    levels widen the receptive field for full-size (645x432) images."""

    def __init__(self, in_ch: int, out_ch: int, base: int = 16, extra_ch: Sequence[int] | None = None,
                 levels: int = 3) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        extra_ch = tuple(extra_ch) if extra_ch is not None else (0,) * levels
        if len(extra_ch) != levels:
            raise ValueError(f"extra_ch needs one entry per level ({levels}), got {len(extra_ch)}")
        ch = tuple(base * 2 ** i for i in range(levels))
        prev = in_ch
        for i in range(levels):  # names e1, e2, … and u(levels-1) … u1 keep 3-level files loadable
            setattr(self, f"e{i + 1}", _conv(prev + extra_ch[i], ch[i]))
            prev = ch[i]
        for i in range(levels - 1, 0, -1):
            setattr(self, f"u{i}", _conv(ch[i] + ch[i - 1], ch[i - 1]))
        self.head = nn.Conv2d(ch[0], out_ch, 1)
        self.channels = ch
        self.levels = int(levels)

    @property
    def stride(self) -> int:
        """The multiple H and W must be: 2^(levels − 1)."""
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor, extra: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        cat = (lambda t, i: torch.cat([t, extra[i]], 1)) if extra is not None else (lambda t, i: t)
        feats = [getattr(self, "e1")(cat(x, 0))]
        for i in range(1, self.levels):
            feats.append(getattr(self, f"e{i + 1}")(cat(F.avg_pool2d(feats[-1], 2), i)))
        y = feats[-1]
        for i in range(self.levels - 1, 0, -1):
            up = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            y = getattr(self, f"u{i}")(torch.cat([up, feats[i - 1]], 1))
        return self.head(y), feats


@dataclass
class CamIndOutput:
    """All (B, 1, H, W): depth_m, lambda_px (predicted blur), sigma_defocus_px, corrected (the blur
    handed to the depth network: σ_defocus/(ρ·k_cam), or σ_defocus itself without k_cam)."""

    depth_m: torch.Tensor
    lambda_px: torch.Tensor
    sigma_defocus_px: torch.Tensor
    corrected: torch.Tensor


class CamIndDFD(nn.Module):
    """Blur network -> camera correction -> depth network (paper 2 Fig. 2).

    use_k_cam False is the "no k_cam" baseline: the same networks, the blur uncorrected.
    rho: σ = ρ·ε (the rig's blur.rho); depth_scale_m: initial depth (log-depth head bias).
    Input RGB in [0, 1], (B, 3, H, W), H and W multiples of :attr:`stride` (4 for 3 levels).
    """

    def __init__(self, base: int = 16, rho: float = optics.PAPER1_RHO, use_k_cam: bool = True,
                 depth_scale_m: float = 2.5, levels: int = 3) -> None:
        super().__init__()
        self.rho, self.use_k_cam = float(rho), bool(use_k_cam)
        self.blur_net = SmallUNet(3, 1, base, levels=levels)
        self.depth_net = SmallUNet(4, 1, base, extra_ch=self.blur_net.channels, levels=levels)
        with torch.no_grad():
            self.depth_net.head.bias.fill_(math.log(depth_scale_m))

    @property
    def stride(self) -> int:
        """Input H and W must be multiples of this (the U-Nets pool levels − 1 times)."""
        return self.blur_net.stride

    def correct(self, lambda_px: torch.Tensor, k_cam_px: torch.Tensor, gamma_px: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(σ_defocus, corrected) from λ (B, 1, H, W), k_cam (B,) and γ (B,) — out-of-place only."""
        g = gamma_px.to(lambda_px).view(-1, 1, 1, 1)
        sig = torch.sqrt(torch.clamp(lambda_px * lambda_px - g * g, min=1e-6))
        if not self.use_k_cam:
            return sig, sig
        k = k_cam_px.to(lambda_px).view(-1, 1, 1, 1)
        return sig, sig / (self.rho * k)

    def forward(self, rgb: torch.Tensor, k_cam_px: torch.Tensor | float, gamma_px: torch.Tensor | float = 0.0
                ) -> CamIndOutput:
        b = rgb.shape[0]
        k = torch.as_tensor(k_cam_px, dtype=rgb.dtype, device=rgb.device).expand(b) if not (
            isinstance(k_cam_px, torch.Tensor) and k_cam_px.numel() == b) else k_cam_px
        g = torch.as_tensor(gamma_px, dtype=rgb.dtype, device=rgb.device)
        g = g.expand(b) if g.numel() == 1 else g
        raw, feats = self.blur_net(rgb)
        lam = F.softplus(raw)
        sig, corrected = self.correct(lam, k, g)
        log_d, _ = self.depth_net(torch.cat([rgb, corrected], 1), extra=feats)
        return CamIndOutput(torch.exp(log_d), lam, sig, corrected)


def blur_target_px(depth_m: torch.Tensor, k_cam_px: torch.Tensor, focus_m: float, rho: float) -> torch.Tensor:
    """Ground-truth Gaussian σ (px): ρ·k_cam·|d − d_f|/d; depth (B, 1, H, W), k_cam (B,)."""
    return rho * k_cam_px.view(-1, 1, 1, 1) * torch.abs(depth_m - focus_m) / depth_m


def total_blur_target_px(depth_m: torch.Tensor, k_cam_px: torch.Tensor, focus_m: float, rho: float,
                         gamma_px: torch.Tensor | float = 0.0) -> torch.Tensor:
    """The blur λ the image shows (px): √(σ_gt² + γ²), the defocus σ_gt combined with the camera's
    in-focus blur γ (B,) — what :meth:`CamIndDFD.correct` removes again (σ = √(λ² − γ²))."""
    sig = blur_target_px(depth_m, k_cam_px, focus_m, rho)
    g = torch.as_tensor(gamma_px, dtype=sig.dtype, device=sig.device).reshape(-1, 1, 1, 1)
    return torch.sqrt(sig * sig + g * g)


def camind_loss(out: CamIndOutput, depth_m: torch.Tensor, k_cam_px: torch.Tensor, focus_m: float, rho: float,
                b_weight: float = 1.0, gamma_px: torch.Tensor | float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """L_depth (mean |log d̂ − log d|) + b_weight · L_blur (mean |λ − √(σ_gt² + γ²)|); returns (loss, parts).

    λ is trained toward the total blur, so that the γ subtracted in :meth:`CamIndDFD.correct` is
    subtracted exactly once."""
    l_depth = torch.mean(torch.abs(torch.log(out.depth_m) - torch.log(depth_m)))
    l_blur = torch.mean(torch.abs(out.lambda_px - total_blur_target_px(depth_m, k_cam_px, focus_m, rho, gamma_px)))
    return l_depth + b_weight * l_blur, {"depth": float(l_depth.detach()), "blur": float(l_blur.detach())}


@torch.no_grad()
def predict_camind(model: CamIndDFD, rgb: np.ndarray, k_cam_px: float, gamma_px: float = 0.0) -> np.ndarray:
    """Depth (H, W) float32 m from one defocused RGB (H, W, 3) uint8 or float [0, 1] at the model's
    (output) resolution; k_cam_px / gamma_px: the rig config's blur.k_cam_px / blur.gamma_px
    (``rig calibrate blur``). Reflect-pads to a multiple of ``model.stride`` and crops back."""
    model.eval()
    a = np.asarray(rgb)
    x = torch.from_numpy(a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)).permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    ph, pw = (-h) % model.stride, (-w) % model.stride
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    out = model(x, float(k_cam_px), float(gamma_px))
    return out.depth_m[0, 0, :h, :w].numpy().astype(np.float32)


# ------------------------------------------------------------------------------------ experiment
@dataclass(frozen=True)
class CameraSet:
    """Defocused views of the same scenes through one camera: rgb (N, H, W, 3) float32 [0, 1] (sRGB),
    depth (N, H, W) m, true k_cam_px (diameter convention, output px), gamma_px, and an estimated
    k_cam (e.g. blur calibration) for the 'estimated' variant."""

    name: str
    rgb: np.ndarray
    depth_m: np.ndarray
    k_cam_px: float
    gamma_px: float = 0.0
    k_cam_est_px: float | None = None


def _metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    d, g = np.clip(pred.astype(np.float64), 1e-3, None), gt.astype(np.float64)
    ratio = np.maximum(d / g, g / d)
    return {"delta1": float(np.mean(ratio < 1.25)), "delta2": float(np.mean(ratio < 1.25 ** 2)),
            "delta3": float(np.mean(ratio < 1.25 ** 3)), "rel": float(np.mean(np.abs(d - g) / g)),
            "rms": float(np.sqrt(np.mean((d - g) ** 2))), "log10": float(np.mean(np.abs(np.log10(d) - np.log10(g))))}


def _batch(train: Sequence[CameraSet], rng: np.random.Generator, batch: int, crop_hw: tuple[int, int]
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random crops (+ horizontal flips) of random (camera, scene) pairs: rgb (B, 3, h, w), depth
    (B, 1, h, w) m, k_cam (B,) px, γ (B,) px."""
    ch, cw = crop_hw
    xs, ds, ks, gs = [], [], [], []
    for _ in range(batch):
        cam = train[int(rng.integers(len(train)))]
        i = int(rng.integers(cam.rgb.shape[0]))
        h, w = cam.depth_m.shape[1:]
        y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        x, d = cam.rgb[i, y0:y0 + ch, x0:x0 + cw], cam.depth_m[i, y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            x, d = x[:, ::-1], d[:, ::-1]
        xs.append(np.ascontiguousarray(x))
        ds.append(np.ascontiguousarray(d))
        ks.append(cam.k_cam_px)
        gs.append(cam.gamma_px)
    return (torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.stack(ds))[:, None],
            torch.tensor(ks, dtype=torch.float32), torch.tensor(gs, dtype=torch.float32))


def train_camind(model: CamIndDFD, train: Sequence[CameraSet], focus_m: float, steps: int, crop_hw: tuple[int, int],
                 batch: int = 4, lr: float = 2e-3, b_weight: float = 1.0, seed: int = 0,
                 log: Callable[[str], None] | None = None, checkpoint: str | None = None,
                 checkpoint_every: int = 200) -> list[float]:
    """Adam (cosine schedule) on random crops of random (camera, scene) pairs; returns the loss per step.

    Batches come from a generator seeded by (seed, step), so a run resumed from ``checkpoint`` (model,
    optimiser, scheduler and losses, written atomically every ``checkpoint_every`` steps) draws the
    same batches as an uninterrupted one.
    """
    from pathlib import Path

    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    losses: list[float] = []
    start = 0
    ck = Path(checkpoint) if checkpoint else None
    if ck is not None and ck.is_file():
        state = torch.load(ck, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        losses = [float(v) for v in state["losses"]]
        start = int(state["step"])
        if log:
            log(f"resumed from {ck} at step {start}")
    model.train()
    for step in range(start, steps):
        x, d, k, g = _batch(train, np.random.default_rng([seed, step]), batch, crop_hw)
        out = model(x, k, g)
        loss, _ = camind_loss(out, d, k, focus_m, model.rho, b_weight, gamma_px=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if ck is not None and (done % checkpoint_every == 0 or done == steps):
            import io

            from rig.core.imageio import atomic_write_bytes

            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "losses": torch.tensor(losses), "step": done}, buf)
            atomic_write_bytes(ck, buf.getvalue())
        if log and (step % max(1, steps // 10) == 0 or done == steps):
            log(f"step {done}/{steps}: loss {float(np.mean(losses[-50:])):.4f} (mean of last ≤50)")
    return losses


@torch.no_grad()
def evaluate_camind(model: CamIndDFD, cam: CameraSet, k_cam_px: float) -> dict[str, float]:
    """Metrics over all pixels of the camera's images, the model given ``k_cam_px``."""
    model.eval()
    preds = [predict_camind(model, cam.rgb[i], k_cam_px, cam.gamma_px) for i in range(cam.rgb.shape[0])]
    return _metrics(np.stack(preds), cam.depth_m)


VARIANTS = (("no k_cam", False), ("gt k_cam", True))


def _train_variant(job: dict) -> dict:
    """One variant's training (top level so a process pool can run the variants side by side)."""
    torch.set_num_threads(int(job.get("threads", 1)))
    torch.manual_seed(job["seed"])
    model = CamIndDFD(base=job["base"], rho=job["rho"], use_k_cam=job["use_k_cam"],
                      depth_scale_m=job["depth_scale_m"])
    log = print if job.get("verbose") else None
    tag = job["variant"]
    t0 = time.perf_counter()
    losses = train_camind(model, job["train"], job["focus_m"], job["steps"], job["crop_hw"], job["batch"],
                          lr=job["lr"], seed=job["seed"], checkpoint=job.get("checkpoint"),
                          log=(lambda m: log(f"[{tag}] {m}", flush=True)) if log else None)
    return {"state_dict": model.state_dict(), "losses": losses, "seconds": time.perf_counter() - t0}


def run_cross_camera_experiment(train: Sequence[CameraSet], test: Sequence[CameraSet], focus_m: float,
                                steps: int = 300, crop_hw: tuple[int, int] = (96, 128), batch: int = 4,
                                base: int = 16, rho: float = optics.PAPER1_RHO, seed: int = 0, lr: float = 2e-3,
                                workers: int = 1, save_dir: str | None = None,
                                k_cam_errors: Sequence[float] = (),
                                log: Callable[[str], None] | None = None) -> list[dict]:
    """Paper 2 Table 3's shape: rows (variant, test camera) with δ1–3, REL, RMSE, log10.

    Variants: 'no k_cam' (trained and tested uncorrected), 'gt k_cam' (true k_cam at train and test),
    'est k_cam' (the gt-trained model given each test camera's k_cam_est_px, if any). Both variants
    see the same batches. ``workers`` 2 trains them in two processes (one thread each);
    ``save_dir``: resumable checkpoints ``<variant>.ckpt`` and the trained models
    ``camind_nok.pt`` / ``camind_gt.pt`` (:func:`save_camind`, usable by ``rig predict``).
    ``k_cam_errors`` (e.g. 0.9, 1.1): extra rows 'k_cam ×f' — the gt-trained model given each test
    camera's true k_cam times f, i.e. how a calibration error propagates to depth.
    """
    from pathlib import Path

    depth_scale = float(np.median(np.concatenate([c.depth_m.ravel() for c in train])))
    jobs = []
    for variant, use_k in VARIANTS:
        ck = str(Path(save_dir) / f"{variant.replace(' ', '_')}.ckpt") if save_dir else None
        jobs.append({"variant": variant, "use_k_cam": use_k, "train": list(train), "focus_m": focus_m,
                     "steps": steps, "crop_hw": tuple(crop_hw), "batch": batch, "base": base, "rho": rho,
                     "seed": seed, "lr": lr, "depth_scale_m": depth_scale, "checkpoint": ck,
                     "verbose": log is not None})
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
            results = list(ex.map(_train_variant, jobs))
    else:
        prev = torch.get_num_threads()
        try:
            results = [_train_variant(j) for j in jobs]
        finally:
            torch.set_num_threads(prev)
    rows = []
    for (variant, use_k), res in zip(VARIANTS, results):
        model = CamIndDFD(base=base, rho=rho, use_k_cam=use_k, depth_scale_m=depth_scale)
        model.load_state_dict(res["state_dict"])
        if log:
            tail = float(np.mean(res["losses"][-50:])) if res["losses"] else float("nan")
            log(f"{variant}: {steps} steps, final loss {tail:.4f}, {res['seconds']:.0f} s")
        if save_dir:
            save_camind(model, Path(save_dir) / ("camind_gt.pt" if use_k else "camind_nok.pt"),
                        {"focus_m": float(focus_m), "train_k_cam_px": [float(c.k_cam_px) for c in train],
                         "image_size_px": [int(train[0].rgb.shape[2]), int(train[0].rgb.shape[1])],
                         "steps": int(steps)})
        for cam in test:
            rows.append({"variant": variant, "camera": cam.name, "k_cam_px": cam.k_cam_px,
                         **evaluate_camind(model, cam, cam.k_cam_px)})
        if use_k:
            for cam in test:
                if cam.k_cam_est_px is not None:
                    rows.append({"variant": "est k_cam", "camera": cam.name, "k_cam_px": cam.k_cam_est_px,
                                 **evaluate_camind(model, cam, cam.k_cam_est_px)})
            for f in k_cam_errors:
                for cam in test:
                    rows.append({"variant": f"k_cam ×{f:g}", "camera": cam.name, "k_cam_px": cam.k_cam_px * f,
                                 **evaluate_camind(model, cam, cam.k_cam_px * f)})
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table of :func:`run_cross_camera_experiment`'s rows."""
    head = "| variant | test camera | k_cam used (px) | δ1 ↑ | δ2 ↑ | δ3 ↑ | REL ↓ | RMSE (m) ↓ | log10 ↓ |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['camera']} | {r['k_cam_px']:.3f} | {r['delta1']:.3f} | {r['delta2']:.3f} "
                     f"| {r['delta3']:.3f} | {r['rel']:.3f} | {r['rms']:.3f} | {r['log10']:.3f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ files
CAMIND_ARCH = "camind"


def save_camind(model: CamIndDFD, path, meta: dict, half: bool = False) -> "Path":
    """Write ``{'arch': 'camind', 'state_dict' (float32, or float16 with ``half``), 'meta'}``
    atomically. ``meta`` should hold focus_m (the focus distance the depth network learned),
    train_k_cam_px and image_size_px; the constructor arguments (base, rho, use_k_cam, levels) are
    added here. :func:`load_camind` reads either precision into a float32 network."""
    import io
    from pathlib import Path

    from rig.core.imageio import atomic_write_bytes

    full = {**meta, "base": int(model.blur_net.channels[0]), "rho": model.rho, "use_k_cam": model.use_k_cam,
            "levels": int(model.blur_net.levels)}
    sd = {k: (v.detach().half() if half and torch.is_floating_point(v) else v.detach()).cpu().contiguous()
          for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"arch": CAMIND_ARCH, "state_dict": sd, "meta": full}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def is_camind_file(path) -> bool:
    """True when ``path`` is a file written by :func:`save_camind`. Memory-mapped, so telling a
    D3-Net file apart does not read its weights a second time before ``load_model`` does."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 — not ours
        return False
    return isinstance(obj, dict) and obj.get("arch") == CAMIND_ARCH


def load_camind(path) -> tuple[CamIndDFD, dict]:
    """(model in eval mode, meta) from a :func:`save_camind` file; RigError (one line) otherwise."""
    from rig.core.errors import RigError

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — any unreadable file is a user error
        raise RigError(f"{path}: not a readable model file ({str(e).strip().splitlines()[0][:120]})") from None
    if not isinstance(obj, dict) or obj.get("arch") != CAMIND_ARCH:
        raise RigError(f"{path}: not a camera-independent (camind) model file")
    meta = dict(obj.get("meta", {}))
    model = CamIndDFD(base=int(meta.get("base", 16)), rho=float(meta.get("rho", optics.PAPER1_RHO)),
                      use_k_cam=bool(meta.get("use_k_cam", True)), levels=int(meta.get("levels", 3)))
    try:
        model.load_state_dict({k: v.float() if torch.is_floating_point(v) else v
                               for k, v in obj["state_dict"].items()})
    except RuntimeError as e:
        raise RigError(f"{path}: weights do not fit the camind network ({str(e).splitlines()[0][:120]})") from None
    model.eval()
    return model, meta
