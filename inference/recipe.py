"""Depth-quality recipes: train one recipe on one cross-validation fold (or on all data), evaluate
the held-out fold, and tabulate folds as mean ± sd (``rig depth-study``).

A recipe fixes the network, the loss and the share of the step budget spent pretraining on
synthetic defocus (:mod:`inference.pretrain`) before finetuning on the real images. The budget is
a number of Adam steps (batch ``batch``, random ``crop_px`` crops + horizontal flips); the learning
rate follows a cosine per phase (finetuning starts at 0.6x). Checkpoints (``last.pt``) are written
atomically every ``ckpt_every`` steps, so a killed run resumes where it stopped.

Folds come from :func:`inference.cv.time_folds`: contiguous time chunks, with every training
capture within 120 s of a held-out one purged. Nothing of a held-out fold (neither its defocused
nor its all-in-focus image) reaches the pretraining pool.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rig.core.errors import RigError


@dataclass(frozen=True)
class Recipe:
    """arch: registry name, or 'camind' (:mod:`inference.camind_study`: trained on renders at other
    f-numbers only, read with the rig's k_cam); loss: 'l1' (depth, m), 'log_laplace' (log-depth L1 +
    Laplace NLL of the σ head), 'si_laplace' (scale-invariant log loss, λ = 0.85, + the same NLL) or
    'camind' (log-depth L1 + blur L1); pretrain_fraction: share of the steps on synthetic renders;
    blur_cue: dfdnet's in-network Zhuo defocus cue; use_k_cam: camind only, False = paper 2's
    "no k_cam" baseline (the blur reaches the depth network uncorrected); photometric: jitter each
    training crop's exposure, contrast, white balance and gamma (:func:`photometric_jitter`)."""

    name: str
    arch: str
    loss: str
    pretrain_fraction: float = 0.0
    blur_cue: bool = False
    use_k_cam: bool = True
    photometric: bool = False


DIST_LOSSES = ("log_laplace", "si_laplace")  # losses of a (log-depth μ, log b) head: dfdnet only

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("lite_l1", "d3net-lite", "l1"),                      # the shipped recipe before this study
    Recipe("dfd_log", "dfdnet", "log_laplace"),
    Recipe("dfd_log_pre", "dfdnet", "log_laplace", 0.5),
    Recipe("dfd_log_pre_cue", "dfdnet", "log_laplace", 0.5, True),
    Recipe("dfd_log_cue", "dfdnet", "log_laplace", 0.0, True),
    Recipe("dfd_si_pre", "dfdnet", "si_laplace", 0.5),
    Recipe("dfd_log_pre_photo", "dfdnet", "log_laplace", 0.5, photometric=True),
    Recipe("camind_dslr", "camind", "camind", 1.0),              # paper 2 on the real DSLR (item 5)
    Recipe("camind_dslr_nok", "camind", "camind", 1.0, use_k_cam=False),  # the same without k_cam
)}


@dataclass(frozen=True)
class Budget:
    """Steps of batch ``batch`` with square crops of ``crop_px``; Adam learning rate ``lr``."""

    steps: int
    batch: int = 8
    crop_px: int = 192
    lr: float = 5e-4
    seed: int = 0
    synth_per_image: int = 4
    procedural: int = 60
    ckpt_every: int = 200
    precision: str = "fp32"  # 'bf16': autocast bfloat16 + channels_last (≈2.5x faster on AVX512-BF16 CPUs)


PRECISIONS = ("fp32", "bf16")


def bf16_supported() -> bool:
    """True when the CPU runs bfloat16 convolutions natively (oneDNN: AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class Images:
    """Real samples in memory: input RGB, all-in-focus RGB (uint8 (H, W, 3)), depth_m, valid (bool)."""

    ids: list[str]
    rgb: list[np.ndarray]
    aif: list[np.ndarray]
    depth_m: list[np.ndarray]
    valid: list[np.ndarray]


def load_images(root: Path, split: str, ids: Sequence[str], input_kind: str) -> Images:
    """Read samples of the rig.core.dataset layout; ``input_kind`` 'N2_8' or 'N8' is the network input."""
    from rig.core import dataset as rds

    out = Images([], [], [], [], [])
    for sid in ids:
        s = rds.read_sample(root, split, sid, kinds=("N2_8", "N8", "depth", "valid"))
        rgb = s.defocused_rgb if input_kind == "N2_8" else s.all_in_focus_rgb
        if rgb is None or s.all_in_focus_rgb is None:
            raise RigError(f"{root}/{split}: sample {sid} lacks its N2_8 or N8 image")
        out.ids.append(sid)
        out.rgb.append(rgb)
        out.aif.append(s.all_in_focus_rgb)
        out.depth_m.append(s.depth_m.astype(np.float32))
        out.valid.append((s.valid > 0) & (s.depth_m > 0))
    return out


def photometric_jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random photometric change of a (3, H, W) float32 image in [0, 1], the same at every pixel:
    exposure gain 0.7-1.4x, contrast 0.8-1.25x about the mean, per-channel white-balance gain
    0.9-1.1x and gamma 0.8-1.25 (each log-uniform), clipped to [0, 1]. No pixel moves, so the blur
    (the spatial spread of each edge) is unchanged."""
    def log_u(lo: float, hi: float, n: int | None = None) -> np.ndarray:
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))

    gain = log_u(0.7, 1.4) * log_u(0.9, 1.1, 3)
    x = rgb * gain.astype(np.float32)[:, None, None]
    m = float(x.mean())
    x = np.clip(m + (x - m) * float(log_u(0.8, 1.25)), 0.0, 1.0)
    return (x ** float(log_u(0.8, 1.25))).astype(np.float32)


def random_batch(rgbs: Sequence[np.ndarray], depths: Sequence[np.ndarray], valids: Sequence[np.ndarray],
                 rng: np.random.Generator, batch: int, crop_px: int, photometric: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb (B, 3, c, c) float32 [0, 1], depth (B, 1, c, c) m, valid (B, 1, c, c) bool): random
    crops of random images, mirrored with probability 1/2 (nothing that changes the blur);
    ``photometric``: each crop also gets :func:`photometric_jitter` (drawn after the crop's other
    draws, so the crops themselves are those of the plain batch only for the first sample)."""
    xs, ys, vs = [], [], []
    for _ in range(batch):
        i = int(rng.integers(len(rgbs)))
        h, w = depths[i].shape
        t, left = int(rng.integers(0, h - crop_px + 1)), int(rng.integers(0, w - crop_px + 1))
        sl = (slice(t, t + crop_px), slice(left, left + crop_px))
        r, d, v = rgbs[i][sl], depths[i][sl], valids[i][sl]
        if rng.random() < 0.5:
            r, d, v = r[:, ::-1], d[:, ::-1], v[:, ::-1]
        x = np.ascontiguousarray(r.transpose(2, 0, 1), np.float32) / 255.0
        xs.append(photometric_jitter(x, rng) if photometric else x)
        ys.append(np.ascontiguousarray(d[None], np.float32))
        vs.append(np.ascontiguousarray(v[None]))
    return np.stack(xs), np.stack(ys), np.stack(vs)


def lr_at(step: int, pretrain_steps: int, total_steps: int, lr: float) -> float:
    """Cosine per phase; the finetuning phase (after pretraining) starts at 0.6·lr."""
    pre = step < pretrain_steps
    p0, p1 = (0, pretrain_steps) if pre else (pretrain_steps, total_steps)
    lr0 = lr if pre or pretrain_steps == 0 else 0.6 * lr
    return lr0 * 0.5 * (1 + math.cos(math.pi * (step - p0) / max(1, p1 - p0)))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    from rig.core.imageio import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def synth_pool_for(train: Images, input_kind: str, budget: Budget, rig_config: str = "nikon_d200_xtion"):
    """The pretraining pool of a fold: scaled-depth renders of its training f/8 images + procedural
    scenes, through the rig's defocused (input N2_8) or all-in-focus (input N8) lens."""
    from inference.pretrain import SynthPool, procedural_renders, scaled_depth_renders
    from rig.core.config import load_rig_config

    cfg = load_rig_config(rig_config)
    lens = cfg.lens("defocused" if input_kind == "N2_8" else "all_in_focus")
    kw = dict(psf=cfg.blur.psf, rho=cfg.blur.rho, max_step_px=cfg.blur.max_layer_step_px)
    a = scaled_depth_renders(train.aif, train.depth_m, lens, per_image=budget.synth_per_image,
                             seed=budget.seed, **kw)
    h, w = train.depth_m[0].shape
    b = procedural_renders(budget.procedural, (w, h), lens, seed=budget.seed, **kw)
    return SynthPool(a.rgb + b.rgb, a.depth_m + b.depth_m, a.scale + b.scale)


def train_recipe(recipe: Recipe, budget: Budget, train: Images, input_kind: str, out_dir: Path,
                 log: Callable[[str], None] = lambda s: None, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Train (resuming from ``out_dir/last.pt``); returns (model in eval mode, on the CPU, meta record).
    A camind recipe returns a :class:`inference.camind_study.CamindOnRig` (bound to the rig's k_cam).
    ``device``: where the steps run ('cpu', 'cuda', 'cuda:1'); batches are cut on the CPU either way."""
    import torch

    if recipe.arch == "camind" and device != "cpu":
        raise RigError("--device: camind recipes train on the CPU only")
    if recipe.arch == "camind":
        from inference.camind_study import CamindOnRig, train_camind_recipe

        if input_kind != "N2_8":
            raise RigError("the camind recipe reads defocus: --input must be N2_8")
        net, meta = train_camind_recipe(budget, train, out_dir, log, use_k_cam=recipe.use_k_cam)
        meta["recipe"] = asdict(recipe)
        return CamindOnRig(net, meta["eval_k_cam_px"], meta["eval_gamma_px"], meta["eval_ref_width_px"]), meta

    from inference.losses import log_l1_laplace_loss, log_si_laplace_loss, masked_l1
    from inference.model import build_model

    out_dir.mkdir(parents=True, exist_ok=True)
    alld = np.concatenate([d[v] for d, v in zip(train.depth_m, train.valid)])
    scale_m = float(np.exp(np.mean(np.log(alld)))) if recipe.loss in DIST_LOSSES else float(alld.mean())
    torch.manual_seed(budget.seed)
    kwargs: dict[str, Any] = {"blur_cue": recipe.blur_cue} if recipe.arch == "dfdnet" else {}
    model = build_model(recipe.arch, depth_scale_m=scale_m, **kwargs)
    if budget.precision not in PRECISIONS:
        raise RigError(f"precision must be one of {', '.join(PRECISIONS)}, got {budget.precision!r}")
    bf16 = budget.precision == "bf16"
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    dev_type = torch.device(device).type  # autocast's device kind
    opt = torch.optim.Adam(model.parameters(), lr=budget.lr)
    pre_steps = int(round(recipe.pretrain_fraction * budget.steps))
    step, losses, seconds = 0, [], 0.0
    ck = out_dir / "last.pt"
    if ck.exists():
        st = torch.load(ck, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, losses, seconds = int(st["step"]), list(st["losses"]), float(st["seconds"])
        log(f"resumed at step {step}")
    pool = None
    if pre_steps > step:
        t0 = time.perf_counter()
        pool = synth_pool_for(train, input_kind, budget)
        log(f"pretraining pool: {len(pool)} synthetic images ({time.perf_counter() - t0:.0f} s)")
        pool_valid = [np.ones_like(d, bool) for d in pool.depth_m]
    t_mark = time.perf_counter()
    while step < budget.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, pre_steps, budget.steps, budget.lr)
        rng = np.random.default_rng([budget.seed, step])
        if step < pre_steps:
            x, y, v = random_batch(pool.rgb, pool.depth_m, pool_valid, rng, budget.batch, budget.crop_px,  # type: ignore[union-attr]
                                   recipe.photometric)
        else:
            x, y, v = random_batch(train.rgb, train.depth_m, train.valid, rng, budget.batch, budget.crop_px,
                                   recipe.photometric)
        x = torch.from_numpy(x).to(device).contiguous(memory_format=fmt)
        y, v = torch.from_numpy(y).to(device), torch.from_numpy(v).to(device)
        model.train()
        if recipe.loss in DIST_LOSSES:
            with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=bf16):
                mu, log_b = model.forward_dist(x)
            loss_fn = log_l1_laplace_loss if recipe.loss == "log_laplace" else log_si_laplace_loss
            l1, nll = loss_fn(mu.float(), log_b.float(), y, v)
            loss = l1 + 0.1 * nll
        else:
            with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=bf16):
                pred = model(x)
            l1 = loss = masked_l1(pred.float(), y, v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(l1.detach()))
        if step % budget.ckpt_every == 0 or step == budget.steps:
            seconds += time.perf_counter() - t_mark
            t_mark = time.perf_counter()
            _atomic_torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                                "losses": losses, "seconds": seconds}, ck)
            log(f"step {step}/{budget.steps}: loss {np.mean(losses[-budget.ckpt_every:]):.4f} "
                f"({seconds / step:.2f} s/step)")
    model = model.to(device="cpu", memory_format=torch.contiguous_format).eval()
    meta = {"arch": recipe.arch, "model_kwargs": kwargs, "recipe": asdict(recipe), "budget": asdict(budget),
            "device": str(device),
            "input": input_kind, "depth_scale_m": scale_m, "image_size_px": [int(train.depth_m[0].shape[1]),
                                                                               int(train.depth_m[0].shape[0])],
            "pretrain_steps": pre_steps, "train_ids": list(train.ids), "train_seconds": seconds,
            "final_train_loss": float(np.mean(losses[-200:])) if losses else None}
    return model, meta


def _flip_mean_depth(depth_of: Callable[[np.ndarray], np.ndarray], rgb: np.ndarray, flip_tta: bool) -> np.ndarray:
    """``depth_of(rgb)``, or with flip TTA the geometric mean of it and the mirror image's depth."""
    depth = depth_of(rgb)
    if flip_tta:
        depth_f = depth_of(np.ascontiguousarray(rgb[:, ::-1]))[:, ::-1]
        depth = np.exp(0.5 * (np.log(depth) + np.log(depth_f)))
    return depth


def predict_depth_std(model: Any, rgb: np.ndarray, flip_tta: bool, mc_samples: int = 8
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(depth_m, std_m), both (H, W), of one model on one uint8 (H, W, 3) image: the aleatoric σ for
    dfdnet (flip TTA averages both), MC-dropout with ``mc_samples`` otherwise; a camind model
    (:class:`inference.camind_study.CamindOnRig`) has no σ: std_m is all NaN."""
    from inference.camind_study import CamindOnRig
    from inference.predict import predict_image

    if isinstance(model, CamindOnRig):
        depth = _flip_mean_depth(model.depth_m, rgb, flip_tta)
        return depth, np.full_like(depth, np.nan)
    if hasattr(model, "forward_dist"):
        p = predict_image(model, rgb, flip_tta=flip_tta)
        return p.depth_m, p.std_m
    depth = _flip_mean_depth(lambda x: predict_image(model, x).depth_m, rgb, flip_tta)
    return depth, predict_image(model, rgb, mc_samples=mc_samples).std_m


def ensemble_depth_std(depths_m: Sequence[np.ndarray], stds_m: Sequence[np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Combine M members' (H, W) depth and σ (m): the geometric mean depth, and the σ of the
    equal-weight mixture, sqrt(mean σ_i² + var_i depth_i) (aleatoric + the members' spread)."""
    d = np.stack([np.asarray(x, np.float64) for x in depths_m])
    s = np.stack([np.asarray(x, np.float64) for x in stds_m])
    depth = np.exp(np.log(np.maximum(d, 1e-6)).mean(0))
    std = np.sqrt((s * s).mean(0) + d.var(0))
    return depth.astype(np.float32), std.astype(np.float32)


def ensemble_model(members: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
    """Trained ``dfdnet`` models (same input, same training ids) -> (one :class:`DfdEnsemble`, its meta).

    The meta keeps each member's recipe, budget, seed, training time and loss under ``'members'``;
    ``budget``/``recipe``/``input``/``train_ids`` are the (common) ones. Raises RigError (one line)
    when the members cannot form one model. ``members``: :class:`inference.model.LoadedModel` records.
    """
    from inference.model import DfdEnsemble

    if len(members) < 2:
        raise RigError("an ensemble needs at least two member models")
    bad = [str(m.path) for m in members if m.arch != "dfdnet"]
    if bad:
        raise RigError(f"{bad[0]}: ensemble members must be dfdnet models")
    inputs = {str(m.meta.get("input")) for m in members}
    if len(inputs) > 1:
        raise RigError(f"ensemble members have different inputs: {sorted(inputs)}")
    ids = {str(m.meta.get("train_ids")) for m in members}
    if len(ids) > 1:
        raise RigError("ensemble members were trained on different captures (train_ids differ)")
    kwargs = [dict(m.meta.get("model_kwargs", {})) for m in members]
    if any(k != kwargs[0] for k in kwargs):
        raise RigError("ensemble members differ in their network settings (model_kwargs)")
    keep = ("recipe", "budget", "train_seconds", "final_train_loss", "depth_scale_m", "shipped_from")
    first = members[0].meta
    meta: dict[str, Any] = {
        "arch": DfdEnsemble.arch,
        "model_kwargs": {"members": len(members), "member_kwargs": kwargs[0]},
        "recipe": first.get("recipe"), "budget": first.get("budget"), "input": first.get("input"),
        "image_size_px": first.get("image_size_px"), "train_ids": first.get("train_ids"),
        "fold": first.get("fold"), "val_ids": first.get("val_ids", []), "depth_scale_m": first.get("depth_scale_m"),
        "members": [{"from": str(m.path), **{k: m.meta[k] for k in keep if k in m.meta}} for m in members],
    }
    return DfdEnsemble.of([m.model for m in members], kwargs[0]), meta  # type: ignore[list-item]


def ensemble_member(loaded: Any, index: int) -> tuple[Any, dict[str, Any]]:
    """Member ``index`` of a ``dfdnet-ens`` model (an :class:`inference.model.LoadedModel`) as a
    plain dfdnet and its meta (the ensemble's common fields plus that member's record)."""
    if loaded.arch != "dfdnet-ens":
        raise RigError(f"{loaded.path}: --member: not an ensemble (arch {loaded.arch})")
    n = len(loaded.model.members)
    if not 0 <= index < n:
        raise RigError(f"--member: {loaded.path} has members 0..{n - 1}, got {index}")
    m = loaded.meta
    records = list(m.get("members", []))
    common = ("recipe", "input", "image_size_px", "train_ids", "fold", "val_ids", "flip_tta")
    meta = {**{k: m[k] for k in common if k in m}, **(records[index] if index < len(records) else {}),
            "arch": "dfdnet", "model_kwargs": dict(m["model_kwargs"].get("member_kwargs", {})),
            "member_of": str(loaded.path), "member": index}
    return loaded.model.members[index], meta


def evaluate_images(model: Any, images: Images, flip_tta: bool, mc_samples: int = 8) -> dict[str, Any]:
    """Mean depth metrics over images plus the uncertainty figures (aleatoric σ for dfdnet, MC-dropout
    with ``mc_samples`` otherwise): per-image Spearman(σ, |err|), per-image and pooled AUSE ratio.
    ``model`` may be a list of models: an ensemble (:func:`ensemble_depth_std`)."""
    from inference.cv import ause, spearman
    from inference.metrics import depth_metrics, mean_metrics

    members = list(model) if isinstance(model, (list, tuple)) else [model]
    per, errs, sigs, rhos, ratios = [], [], [], [], []
    for rgb, d, v in zip(images.rgb, images.depth_m, images.valid):
        preds = [predict_depth_std(m, rgb, flip_tta, mc_samples) for m in members]
        depth, std = preds[0] if len(preds) == 1 else ensemble_depth_std(*zip(*preds))
        per.append(depth_metrics(depth, d, v))
        m = v & (d > 0)
        e = np.abs(depth[m] - d[m])
        errs.append(e)
        sigs.append(std[m])
        has_sigma = bool(np.isfinite(std[m]).all())
        rhos.append(spearman(std[m], e) if has_sigma else float("nan"))
        ratios.append(ause(e, std[m])["ause_ratio"] if has_sigma else float("nan"))
    mm = mean_metrics(per)
    e_all, s_all = np.concatenate(errs), np.concatenate(sigs)
    nan = float("nan")
    with np.errstate(all="ignore"):  # a model without σ gets NaN figures, not warnings
        pooled = ause(e_all, s_all)["ause_ratio"] if np.isfinite(s_all).all() else nan
        ause_mean = float(np.nanmean(ratios)) if np.isfinite(ratios).any() else nan
        rho_mean = float(np.nanmean(rhos)) if np.isfinite(rhos).any() else nan
    return {**{k: float(x) for k, x in mm.items()}, "ause_ratio": ause_mean, "ause_ratio_pooled": pooled,
            "spearman": rho_mean, "per_image_rel": [float(p["rel"]) for p in per], "ids": list(images.ids)}


def ensemble_fold(root: Path, member_dirs: Sequence[Path], out_dir: Path) -> dict[str, Any]:
    """Score the ensemble of finished fold runs ``member_dirs`` (each holding model.pt from
    :func:`run_fold` on the same fold) on their common held-out ids; writes ``out_dir/result.json``."""
    from inference.model import load_model

    if len(member_dirs) < 2:
        raise RigError("an ensemble needs at least two member runs")
    loaded = []
    for d in member_dirs:
        if not (Path(d) / "model.pt").is_file():
            raise RigError(f"{d}: no model.pt (an unfinished run?)")
        loaded.append(load_model(Path(d) / "model.pt"))
    metas = [x.meta for x in loaded]
    held = list(metas[0].get("val_ids") or [])
    if not held or any(list(m.get("val_ids") or []) != held for m in metas[1:]):
        raise RigError("ensemble members must be runs of the same fold (same held-out ids)")
    inputs = {m.get("input") for m in metas}
    if len(inputs) != 1:
        raise RigError(f"ensemble members have different inputs: {sorted(map(str, inputs))}")
    input_kind = str(inputs.pop())
    meta = {"fold": metas[0].get("fold"), "members": [str(d) for d in member_dirs], "val_ids": held,
            "input": input_kind, "budget": {**metas[0]["budget"], "steps": sum(m["budget"]["steps"] for m in metas)},
            "train_seconds": sum(float(m.get("train_seconds", 0.0)) for m in metas)}
    models = [x.model for x in loaded]
    hi = load_images(root, "train", held, input_kind)
    result = {"meta": meta, "eval": {"plain": evaluate_images(models, hi, False),
                                     "flip": evaluate_images(models, hi, True)}}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    return result


def run_fold(root: Path, recipe: Recipe, budget: Budget, fold: int | None, k: int, input_kind: str,
             out_dir: Path, log: Callable[[str], None] = lambda s: None, device: str = "cpu") -> dict[str, Any]:
    """Train ``recipe`` on fold ``fold``'s training ids (all ids when None), evaluate the held-out
    ids (plain and flip TTA), write ``model.pt`` and ``result.json`` into ``out_dir``; returns the result."""
    import torch

    from inference.cv import min_gap_s, time_folds
    from rig.core import dataset as rds

    ids = rds.list_samples(root, "train")
    if not ids:
        raise RigError(f"{root}: split 'train' has no samples")
    if fold is None:
        train_ids, held, info = list(ids), [], {"fold": "all"}
    else:
        if not 0 <= fold < k:
            raise RigError(f"--fold must be in 0..{k - 1} (or 'all'), got {fold}")
        f = time_folds(ids, k)[fold]
        train_ids, held = list(f.train), list(f.held_out)
        if not train_ids:
            raise RigError(f"fold {fold} of {k}: no training capture is more than 120 s from the held-out ones")
        info = {"fold": f.index, "k": k, "n_train": len(f.train), "n_held": len(f.held_out),
                "n_purged": len(f.purged), "min_gap_s": min_gap_s(f)}
    model, meta = train_recipe(recipe, budget, load_images(root, "train", train_ids, input_kind), input_kind,
                               out_dir, log, device)
    meta.update(info)
    meta["val_ids"] = held
    result: dict[str, Any] = {"meta": meta}
    if held:
        hi = load_images(root, "train", held, input_kind)
        result["eval"] = {"plain": evaluate_images(model, hi, False), "flip": evaluate_images(model, hi, True)}
    if recipe.arch == "camind":  # a camind file: `rig predict --model` reads k_cam from the rig config
        from inference.camind import save_camind

        save_camind(model.model, out_dir / "model.pt", meta)
    else:
        with torch.no_grad():
            _atomic_torch_save({"arch": recipe.arch, "state_dict": model.state_dict(), "meta": meta},
                               out_dir / "model.pt")
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    return result


def kcam_fold(root: Path, run_dir: Path, out_dir: Path) -> dict[str, Any]:
    """A camind fold run (``run_dir/model.pt`` from :func:`run_fold`) with k_cam fitted on the real
    f/2.8 images + depth of **its own training captures** (camind training never saw them; see
    :func:`inference.camind_study.fit_k_cam`), then scored on its held-out ids at that k_cam (plain and
    flip TTA). Writes ``out_dir/result.json`` (as run_fold does, so `depth-study table` lists it)."""
    from inference.camind import load_camind
    from inference.camind_study import CamindOnRig, fit_k_cam

    net, meta = load_camind(Path(run_dir) / "model.pt")
    if not meta.get("val_ids"):
        raise RigError(f"{run_dir}: not a fold run (no held-out ids)")
    gamma = float(meta.get("eval_gamma_px", 0.0))
    ref_w = int(meta.get("eval_ref_width_px", meta["image_size_px"][0]))  # older runs: their image width
    train = load_images(root, "train", meta["train_ids"], "N2_8")
    t0 = time.perf_counter()
    fit = fit_k_cam(net, train.rgb, train.depth_m, train.valid, float(meta["eval_k_cam_px"]), gamma, ref_w)
    rig = CamindOnRig(net, fit.k_cam_px, gamma, ref_w)
    held = load_images(root, "train", meta["val_ids"], "N2_8")
    meta = {**meta, "k_cam_fit": {**asdict(fit), "loss_by_factor": {str(k): v for k, v in fit.loss_by_factor.items()},
                                  "seconds": time.perf_counter() - t0, "from_run": str(run_dir)}}
    result = {"meta": meta, "eval": {"plain": evaluate_images(rig, held, False), "flip": evaluate_images(rig, held, True)}}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    return result


def ablation_rows(study_dir: Path, keys: Sequence[str] = ("rel", "rms", "delta1", "ause_ratio", "spearman")
                  ) -> list[dict[str, Any]]:
    """One row per (recipe, TTA) of ``study_dir/<recipe>/f<k>/result.json``: mean ± sd over folds."""
    rows = []
    for rdir in sorted(p for p in Path(study_dir).iterdir() if p.is_dir()):
        results = [json.loads(f.read_text()) for f in sorted(rdir.glob("f*/result.json"))]
        results = [r for r in results if "eval" in r]
        if not results:
            continue
        for tta in ("plain", "flip"):
            row: dict[str, Any] = {"recipe": rdir.name, "tta": tta, "folds": [r["meta"]["fold"] for r in results]}
            for key in keys:
                vals = np.array([r["eval"][tta][key] for r in results], float)
                row[key] = (float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"))
            row["steps"] = results[0]["meta"]["budget"]["steps"] if "budget" in results[0]["meta"] else \
                results[0]["meta"].get("steps")
            rows.append(row)
    return rows
