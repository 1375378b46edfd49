"""Training: the loop behind ``rig train --config configs/train/X.yaml [--resume] [--out DIR]``.

Paper 1's recipe: random 224x224 crops + horizontal flips (nothing that changes the blur), L1 loss
on pixels with ground truth, Adam. One checkpoint per epoch (``last.pt``, written atomically, with
optimizer and RNG state: ``--resume`` continues exactly), ``best.pt`` (lowest validation L1, model
only) and ``history.jsonl``. With no 'val' split in the dataset, a validation split is carved from
'train' by scene (manifest scene ids, else capture-time gaps) and recorded in the checkpoints.

Multi-process (DDP): ``torchrun --nproc_per_node N -m rig.cli train ...`` — gloo on CPU, nccl on
GPU; each process takes every N-th crop of the epoch, gradients are averaged, rank 0 validates and
writes the files.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from rig.core.config import Spec, _f, _i, _s, _validate, read_yaml  # the rig config schema machinery
from rig.core.errors import ConfigError, RigError


REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_CONFIG_DIR = REPO_ROOT / "configs" / "train"
ARCHS = ("d3net", "d3net-lite")

TRAIN_SCHEMA: dict[str, Any] = {
    "name": _s(),
    "description": _s(default=""),
    "model": {
        "arch": _s(ARCHS, default="d3net"),
        "dropout": _f(0.0, 0.95, default=0.5),
        # torchvision-format DenseNet-121 state dict (ImageNet); d3net only
        "encoder_weights": Spec("path", default=None, nullable=True),
        # start from this model file (e.g. pretrained on synthetic defocus), same architecture
        "init_from": Spec("path", default=None, nullable=True),
    },
    "data": {
        "root": Spec("path"),
        "input": _s(("N2_8", "N8")),
        # input images from this folder (<id>.png, e.g. `rig synth` output) instead of <root>/<split>/<input>/
        "input_dir": Spec("path", default=None, nullable=True),
        "train_split": _s(("train", "val", "test"), default="train"),
        "val_split": _s(("train", "val", "test"), default="val"),
        "val_fraction": _f(0.01, 0.9, default=0.15),
        "scene_gap_s": _f(0.0, 1e7, "s", default=120.0),
        "max_scene_captures": _i(1, 10**6, default=6),
        "crop_px": Spec("list", item=_i(16, 4096, "px"), length=2, default=[224, 224]),
        "hflip_p": _f(0.0, 1.0, default=0.5),
        "crops_per_image": _i(1, 10000, default=1),
    },
    "train": {
        "epochs": _i(1, 10**6),
        "batch_size": _i(1, 4096, default=8),
        "lr": _f(0.0, 1.0, default=2e-4, lo_open=True),
        "betas": Spec("list", item=_f(0.0, 0.999999), length=2, default=[0.9, 0.999]),
        "weight_decay": _f(0.0, 1.0, default=0.0),
        "lr_schedule": _s(("constant", "cosine"), default="constant"),
        "seed": _i(0, 2**31 - 1, default=0),
        "val_every": _i(1, 10**6, default=1),
        "threads": _i(0, 1024, default=0),
        "device": _s(("auto", "cpu", "cuda"), default="auto"),
        "max_minutes": _f(0.0, 1e7, "min", default=None, nullable=True, lo_open=True),
    },
}


@dataclass(frozen=True)
class TrainConfig:
    """A validated training config; ``raw`` is the normalised dict (paths as strings)."""

    name: str
    model: dict[str, Any]
    data: dict[str, Any]
    train: dict[str, Any]
    raw: dict[str, Any]
    path: Path | None = None


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def train_config_from_dict(data: Any, src: str = "<train config>", path: Path | None = None) -> TrainConfig:
    """Validate (one-line ConfigError naming the key) and build the record. Relative paths are
    relative to the working directory."""
    d = _validate(TRAIN_SCHEMA, data, "", src, None)
    if d["model"]["encoder_weights"] is not None and d["model"]["arch"] != "d3net":
        raise ConfigError(f"{src}: model.encoder_weights: ImageNet DenseNet-121 weights need model.arch 'd3net'")
    if d["data"]["val_split"] == d["data"]["train_split"]:
        raise ConfigError(f"{src}: data.val_split: must differ from data.train_split")
    return TrainConfig(name=d["name"], model=d["model"], data=d["data"], train=d["train"], raw=_plain(d), path=path)


def resolve_train_config(name_or_path: str | Path) -> Path:
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    for cand in (TRAIN_CONFIG_DIR / f"{name_or_path}.yaml", TRAIN_CONFIG_DIR / str(name_or_path)):
        if cand.is_file():
            return cand
    presets = ", ".join(sorted(x.stem for x in TRAIN_CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"{name_or_path}: no such training config or preset (presets: {presets})")


def load_train_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load + validate; ``overrides`` maps dotted keys ('data.root', 'train.epochs') to values."""
    path = resolve_train_config(name_or_path)
    data = read_yaml(path)
    if overrides:
        data = {} if data is None else data
        if isinstance(data, dict):
            for dotted, value in overrides.items():
                node = data
                *parents, leaf = dotted.split(".")
                for key in parents:
                    node = node.setdefault(key, {})
                    if not isinstance(node, dict):
                        raise ConfigError(f"{path}: {key}: expected a mapping")
                node[leaf] = value
    return train_config_from_dict(data, src=str(path), path=path)


# ----------------------------------------------------------------------------------------------
# Distributed set-up


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    comm_device: str = "cpu"  # where collective tensors live (cuda for nccl)

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK); one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local,
                comm_device=f"cuda:{local}" if device.startswith("cuda") else "cpu")


def _barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _param_divergence(model: Any) -> float:
    """Largest |parameter - rank 0's parameter| over all processes (0.0 when DDP keeps them in sync)."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
        ref = flat.clone()
        dist.broadcast(ref, 0)
        diff = (flat - ref).abs().max().reshape(1)
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())


def _broadcast_flag(d: Dist, flag: bool) -> bool:
    if d.world == 1:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=d.comm_device)
    dist.broadcast(t, 0)
    return bool(t.item())


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _save(obj: dict[str, Any], path: Path) -> None:
    import torch

    from rig.core.imageio import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise RigError(f"{path}: unreadable checkpoint ({str(e).strip().splitlines()[0][:120]})") from None
    if not isinstance(ck, dict) or "model" not in ck or "optimizer" not in ck:
        raise RigError(f"{path}: not a training checkpoint of `rig train`")
    return ck


def masked_l1(pred, gt, valid):
    """Mean |pred - gt| over valid pixels (0 with gradient when none)."""
    m = valid & (gt > 0)
    if not bool(m.any()):
        return (pred * 0).sum()
    return (pred[m] - gt[m]).abs().mean()


def seed_everything(seed: int, epoch: int, rank: int) -> None:
    import random

    import torch

    s = (seed * 1_000_003 + epoch * 9_176 + rank * 7) % (2**31 - 1)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % (2**32 - 1))


# ----------------------------------------------------------------------------------------------
# The run


@dataclass
class RunData:
    train: Any  # data.ImageSet
    val: Any | None
    train_split: str
    val_split: str | None
    val_ids: list[str]
    carved: bool


def prepare_data(cfg: TrainConfig) -> RunData:
    from inference import data as D
    from rig.core import dataset as rds

    root = Path(cfg.data["root"])
    manifest = rds.read_manifest(root)
    tsplit, vsplit = cfg.data["train_split"], cfg.data["val_split"]
    train_ids = rds.list_samples(root, tsplit)
    if not train_ids:
        raise RigError(f"{root}: split {tsplit!r} has no samples")
    val_ids = rds.list_samples(root, vsplit)
    carved = False
    if not val_ids:
        scene_of = D.scene_ids_from_manifest(manifest, tsplit)
        train_ids, val_ids = D.carve_val(train_ids, cfg.data["val_fraction"], cfg.train["seed"],
                                         cfg.data["scene_gap_s"], cfg.data["max_scene_captures"], scene_of)
        vsplit, carved = tsplit, True
    idir = cfg.data["input_dir"]
    if idir is not None and not Path(idir).is_dir():
        raise RigError(f"data.input_dir {idir}: no such folder")
    train = D.load_image_set(root, tsplit, cfg.data["input"], train_ids, idir)
    val = D.load_image_set(root, vsplit, cfg.data["input"], val_ids, idir)
    return RunData(train, val, tsplit, vsplit, list(val_ids), carved)


def validate(model: Any, images: Any, device: str) -> dict[str, float]:
    """Full-image validation: L1 (m) and the depth metrics (image means)."""
    import torch

    from inference.metrics import depth_metrics, mean_metrics
    from inference.predict import to_tensor

    model.eval()
    per, l1s = [], []
    with torch.inference_mode():
        for rgb, depth, valid in zip(images.rgb, images.depth_m, images.valid):
            pred = model(to_tensor(rgb, device))[0, 0].float().cpu().numpy()
            m = valid & (depth > 0)
            l1s.append(float(np.abs(pred[m] - depth[m]).mean()) if m.any() else float("nan"))
            per.append(depth_metrics(pred, depth, valid))
    out = mean_metrics(per)
    out["l1"] = float(np.nanmean(l1s))
    return out


def _pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RigError("train.device: 'cuda' requested but no CUDA device is available")
    return name


def run_training(cfg: TrainConfig, out_dir: Path, resume: bool = False,
                 log: Callable[[str], None] = lambda s: None,
                 on_batch: Callable[[int, int, int, float], None] | None = None) -> dict[str, Any]:
    """Train per ``cfg`` into ``out_dir``; returns a summary (epochs run, best/last validation).

    Progress reaches the caller through ``log`` (one line per epoch, rich markup allowed) and
    ``on_batch(epoch, batch, batches_per_epoch, loss)``; only the main DDP process reports."""
    import torch

    from inference import data as D
    from inference.model import build_model, load_imagenet_encoder, load_model

    device = _pick_device(cfg.train["device"])
    dist_ = init_distributed(device)
    if device == "cuda":
        device = f"cuda:{dist_.local_rank}"
        torch.cuda.set_device(device)
    if cfg.train["threads"]:
        torch.set_num_threads(int(cfg.train["threads"]))
    out_dir = Path(out_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if dist_.main:
        if last_path.exists() and not resume:
            raise RigError(f"{out_dir}: already holds a run (last.pt); pass --resume to continue it or choose another --out")
        if resume and not last_path.exists():
            raise RigError(f"{out_dir}: nothing to resume (no last.pt)")
    _barrier(dist_)

    if not dist_.main:
        log, on_batch = (lambda s: None), None
    rd = prepare_data(cfg)
    crop = (int(cfg.data["crop_px"][1]), int(cfg.data["crop_px"][0]))  # (h, w)
    depth_scale = rd.train.mean_depth_m() or 2.5
    arch = cfg.model["arch"]
    model_kwargs = {"dropout": float(cfg.model["dropout"])}
    seed_everything(cfg.train["seed"], -1, 0)  # the same initial weights in every process and every run
    model = build_model(arch, depth_scale_m=depth_scale, **model_kwargs)
    if cfg.model["encoder_weights"] is not None:
        load_imagenet_encoder(model, cfg.model["encoder_weights"])  # type: ignore[arg-type]
    if cfg.model["init_from"] is not None:
        init = load_model(cfg.model["init_from"])
        if init.arch != arch:
            raise RigError(f"model.init_from: {init.path} is a {init.arch!r} model, the config trains {arch!r}")
        model.load_state_dict(init.model.state_dict())
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train["lr"], betas=tuple(cfg.train["betas"]),
                           weight_decay=cfg.train["weight_decay"])
    h0, w0 = rd.train.depth_m[0].shape
    meta: dict[str, Any] = {
        "arch": arch, "model_kwargs": model_kwargs, "config": cfg.raw, "input": cfg.data["input"],
        "image_size_px": [int(w0), int(h0)], "depth_scale_m": depth_scale,
        "dataset": str(cfg.data["root"]), "input_dir": cfg.raw["data"]["input_dir"],
        "train_split": rd.train_split, "val_split": rd.val_split,
        "val_ids": rd.val_ids, "val_carved": rd.carved, "n_train": len(rd.train), "n_val": len(rd.val or []),
    }
    start_epoch, history, best = 0, [], {"l1": math.inf}
    if resume:
        ck = load_checkpoint(last_path)
        if ck.get("arch") != arch or ck.get("meta", {}).get("input") != cfg.data["input"]:
            raise RigError(f"{last_path}: was trained as {ck.get('arch')}/{ck.get('meta', {}).get('input')}, "
                           f"the config says {arch}/{cfg.data['input']}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, history, best = int(ck["epoch"]), list(ck.get("history", [])), dict(ck.get("best", best))
        if "rng_torch" in ck:
            torch.set_rng_state(ck["rng_torch"])
        meta = {**meta, "val_ids": ck.get("meta", {}).get("val_ids", meta["val_ids"])}
    net = model
    if dist_.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dist_.local_rank] if device.startswith("cuda") else None)
    if dist_.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
        (out_dir / "split.json").write_text(json.dumps({"train_split": rd.train_split, "val_split": rd.val_split,
                                                        "carved": rd.carved, "val_ids": rd.val_ids,
                                                        "train_ids": rd.train.ids}, indent=1))
    epochs = int(cfg.train["epochs"])
    n_batches = D.batches_per_epoch(len(rd.train), cfg.data["crops_per_image"], cfg.train["batch_size"], dist_.world)
    log(f"[bold]{cfg.name}[/bold]: {arch} on {cfg.data['input']}, {len(rd.train)} train / "
        f"{len(rd.val or [])} val images ({'carved by scene' if rd.carved else rd.val_split}), "
        f"{dist_.world} process(es) on {device}, {n_batches} batches/epoch, epochs {start_epoch}->{epochs}")
    t_start = time.perf_counter()
    epochs_run = 0
    for epoch in range(start_epoch, epochs):
        if cfg.train["lr_schedule"] == "cosine":
            lr = cfg.train["lr"] * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
            for g in opt.param_groups:
                g["lr"] = lr
        seed_everything(cfg.train["seed"], epoch, dist_.rank)
        net.train()
        t0 = time.perf_counter()
        losses = []
        for rgb, depth, valid in D.iter_batches(rd.train, cfg.train["batch_size"], crop, cfg.data["hflip_p"],
                                                 cfg.train["seed"], epoch, cfg.data["crops_per_image"],
                                                 dist_.rank, dist_.world):
            x = torch.from_numpy(rgb).to(device)
            y = torch.from_numpy(depth).to(device)
            v = torch.from_numpy(valid).to(device)
            loss = masked_l1(net(x), y, v)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if on_batch is not None:
                on_batch(epoch, len(losses), n_batches, losses[-1])
        record: dict[str, Any] = {"epoch": epoch + 1, "train_l1": float(np.mean(losses)) if losses else float("nan"),
                                  "lr": opt.param_groups[0]["lr"], "epoch_s": time.perf_counter() - t0,
                                  "batches": len(losses), "world": dist_.world}
        if dist_.world > 1:
            record["param_max_diff"] = _param_divergence(model)
        if dist_.main:
            is_val = rd.val is not None and ((epoch + 1) % cfg.train["val_every"] == 0 or epoch + 1 == epochs)
            if is_val:
                vm = validate(model, rd.val, device)
                record.update({f"val_{k}": v for k, v in vm.items() if k != "n_images"})
                if vm["l1"] < best.get("l1", math.inf):
                    best = {"epoch": epoch + 1, **vm}
                    _save({"arch": arch, "state_dict": model.state_dict(),
                           "meta": {**meta, "epoch": epoch + 1, "val": vm}}, best_path)
            history.append(record)
            _save({"arch": arch, "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                   "history": history, "best": best, "rng_torch": torch.get_rng_state(),
                   "meta": {**meta, "epoch": epoch + 1}}, last_path)
            with open(out_dir / "history.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            msg = f"epoch {epoch + 1}/{epochs}: train L1 {record['train_l1']:.4f} m ({record['epoch_s']:.1f} s)"
            if "val_l1" in record:
                msg += (f" | val L1 {record['val_l1']:.3f} rel {record['val_rel']:.3f} rms {record['val_rms']:.3f} m "
                        f"δ1 {record['val_delta1'] * 100:.1f}%")
            log(msg)
        epochs_run += 1
        _barrier(dist_)
        over = cfg.train["max_minutes"] is not None and (time.perf_counter() - t_start) / 60 > cfg.train["max_minutes"]
        if _broadcast_flag(dist_, over) and epoch + 1 < epochs:
            log(f"stopping after epoch {epoch + 1}: train.max_minutes ({cfg.train['max_minutes']:g}) "
                          "reached; `--resume` continues")
            break
    summary = {"out": str(out_dir), "epochs_run": epochs_run, "epoch": start_epoch + epochs_run,
               "best": best, "last": history[-1] if history else None, "world": dist_.world,
               "minutes": (time.perf_counter() - t_start) / 60}
    if dist_.world > 1:
        import torch.distributed as dist

        # every rank past the last broadcast before any tears its sockets down: rank 0 can return from
        # the broadcast it sent while rank 1 is still reading it, and gloo then aborts rank 1
        # ("connection closed by peer", SIGABRT; seen once in CI's two-process test)
        _barrier(dist_)
        dist.destroy_process_group()
    return summary


def ship_model(best_path: str | Path, out_path: str | Path, note: str = "") -> Path:
    """Write a run's ``best.pt`` as a shipped fp16 model file (``models/<name>.pt``), keeping its
    metadata (architecture, input, training image size, validation ids and metrics)."""
    from inference.model import export_fp16, load_model

    loaded = load_model(best_path)
    meta = {**loaded.meta, "shipped_from": str(best_path)}
    if note:
        meta["note"] = note
    return export_fp16(loaded.model, Path(out_path), meta)
