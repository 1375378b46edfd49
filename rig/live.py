"""``rig live``: the wiring of the live loop — frame sources, the inference backend, display, viewer.

Sources (``--source``):

* ``dslr`` (default): the config's DSLR (:func:`acquisition.devices.open_dslr`) at the defocused
  aperture (``dslr.f_number_defocused``), shutter and ISO of the config. A gphoto2 camera that offers
  live view (``capture_preview``) is streamed from it — the preview is roughly the output size, but
  in live view many bodies show the scene at the lens's working aperture only when exposure preview
  is on, so check the blur matches the training data; ``--no-preview`` forces full captures (about
  one frame a second over USB). A camera without live view (the D200; libgphoto2's virtual camera)
  falls back to full captures. With the ``simulated`` preset this is the virtual DSLR.
* ``simulated``: the simulated rig's DSLR (:mod:`acquisition.simulated`), moving to the next scene
  every ``--scene-frames`` frames.
* ``replay:SESSION``: a recorded session — a live run (live/frames.jsonl) or a capture session (the
  defocused shot of every completed capture) — as fast as the loop takes it.
* ``folder:DIR``: the images of a folder in name order (e.g. ../shared/data/dfd_outdoor/N2_8).

Every frame is area-resized to the config's output size (645x432), inferred, shown (an OpenCV
window with ``--show`` when a display exists), served (``--serve``) and recorded: the run is a
session folder (``--save``; default out/live/<UTC time>) with the ``live/`` sub-layout of
:mod:`inference.live`, which ``rig replay`` and ``--source replay:`` read back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from inference.export import default_model  # noqa: F401 — re-exported for the demo and callers
from rig.core.errors import DeviceError, RigError
from rig.core.imageio import RAW_EXTS

if TYPE_CHECKING:
    from rig.core.config import RigConfig

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", *RAW_EXTS)
ONNX_CACHE = Path(os.environ.get("RIG_ONNX_CACHE", Path.home() / ".cache" / "deep-dfd-rig" / "onnx"))
DEFAULT_SCENE_FRAMES = 10
CAPTURE_RETRIES = 3


# ----------------------------------------------------------------------------------------------
# Sources


def parse_source(spec: str) -> tuple[str, str | None]:
    """'dslr' | 'simulated' | 'replay:SESSION' | 'folder:DIR' -> (kind, argument)."""
    kind, sep, arg = spec.partition(":")
    if kind in ("dslr", "simulated") and not sep:
        return kind, None
    if kind in ("replay", "folder") and sep and arg:
        return kind, arg
    raise RigError(f"--source {spec!r}: expected dslr, simulated, replay:SESSION or folder:DIR")


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise RigError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    if not files:
        raise RigError(f"{folder}: no images ({', '.join(IMAGE_EXTS)}) in this folder")
    return files


SkipFn = Callable[[str], None]


def read_checked_frame(path: Path, name: str) -> Any:
    """A SourceFrame from an image file, refused (RigError, one line) when the file is truncated or
    corrupt: libjpeg would decode such a file with a warning and grey or garbled pixels."""
    from inference.live import read_frame_file
    from rig.core.session import verify_image_file

    try:
        verify_image_file(Path(path))
    except ValueError as e:
        raise RigError(f"{Path(path).parent / str(e)}") from None
    return read_frame_file(path, name)


def _frames_skipping(items: list[tuple[str, Path]], on_skip: SkipFn | None) -> Iterator[Any]:
    """Checked frames of ``items``; a bad file is reported through ``on_skip`` and left out (without
    ``on_skip`` it stops the run with its one line)."""
    for name, f in items:
        try:
            frame = read_checked_frame(f, name)
        except RigError as e:
            if on_skip is None:
                raise
            on_skip(str(e))
            continue
        yield frame


def folder_frames(folder: Path, loop: bool = False, on_skip: SkipFn | None = None) -> Iterator[Any]:
    """Every image of ``folder`` in name order (once, or forever with ``loop``); a truncated or
    corrupt image is skipped through ``on_skip`` (once, not again on every loop)."""
    items = [(f.name, f) for f in list_images(folder)]
    while True:
        good: list[tuple[str, Path]] = []
        for frame in _frames_skipping(items, on_skip):
            good.append((frame.name, folder / frame.name))
            yield frame
        if not loop or not good:
            return
        items = good


def session_frame_files(path: Path) -> list[tuple[str, Path]]:
    """(name, image file) of a recorded session: its live frames, else its completed captures'
    defocused shots. ConfigError/RigError (one line) when it is not a readable session."""
    from inference.live import LIVE_DIR, read_live_frames
    from rig.core.session import Session

    path = Path(path)
    if (path / LIVE_DIR / "frames.jsonl").is_file():
        return [(f"{path.name}#{e['index']}", Path(e["path"])) for e in read_live_frames(path)]
    session = Session.open(path)
    out = [(c.capture_id, session.raw_dir(c.capture_id) / c.defocused.file) for c in session.completed()]
    if not out:
        raise RigError(f"{path}: the session has no completed captures and no live run to replay")
    return out


def replay_frames(path: Path, loop: bool = False, speed: float = 0.0,
                  on_skip: SkipFn | None = None) -> Iterator[Any]:
    """The frames of a recorded session (see :func:`session_frame_files`); ``speed`` > 0 paces a
    live run at its recorded frame times divided by ``speed``; bad files go to ``on_skip``."""
    items = session_frame_files(path)
    times = _recorded_times(Path(path)) if speed > 0 else {}

    def paced() -> Iterator[tuple[str, Path]]:
        t0 = time.monotonic()
        first: float | None = None
        for name, f in items:
            t = times.get(name)
            if t is not None:
                first = t if first is None else first
                wait = t0 + (t - first) / speed - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            yield name, f

    while True:
        yield from _frames_skipping(paced(), on_skip)
        if not loop:
            return


def _recorded_times(path: Path) -> dict[str, float]:
    from inference.live import LIVE_DIR, read_live_frames

    if (path / LIVE_DIR / "frames.jsonl").is_file():
        return {f"{path.name}#{e['index']}": float(e["t_monotonic_s"]) for e in read_live_frames(path)}
    from rig.core.session import Session

    session = Session.open(path)
    return {c.capture_id: float(c.t_monotonic_s) for c in session.completed() if c.t_monotonic_s}


def _apply_dslr_settings(dslr: Any, cfg: "RigConfig") -> list[str]:
    """Defocused aperture, shutter, ISO, capture target and format — those the camera offers."""
    d = cfg.dslr
    notes = []
    offered = dslr.settings()
    for name, setter, value in (("capturetarget", "set_capture_target", d.capture_target),
                                ("imageformat", "set_image_format", "jpeg"),
                                ("aperture", "set_aperture", d.f_number_defocused),
                                ("shutter", "set_shutter", d.shutter_s),
                                ("iso", "set_iso", d.iso)):
        if name in offered:
            got = getattr(dslr, setter)(value)
            notes.append(f"{name}={got}")
        else:
            notes.append(f"{name}: not offered by {dslr.model}")
    return notes


def _preview_fn(dslr: Any) -> Callable[[], bytes] | None:
    """A live-view grabber (JPEG bytes) when the camera offers one, else None.

    Works on :class:`acquisition.gphoto2_driver.Gphoto2Dslr` through its camera handle
    (``capture_preview``); the driver itself has no preview method yet.
    """
    preview = getattr(dslr, "capture_preview", None)
    if callable(preview):
        fn: Callable[[], Any] = preview
    else:
        cam_fn = getattr(dslr, "_cam", None)
        if not callable(cam_fn):
            return None
        fn = lambda: cam_fn().capture_preview()  # noqa: E731

    def grab() -> bytes:
        out = fn()
        if isinstance(out, (bytes, bytearray)):
            return bytes(out)
        if hasattr(out, "get_data_and_size"):
            return bytes(memoryview(out.get_data_and_size()))
        return Path(getattr(out, "path", out)).read_bytes()

    try:
        data = grab()
    except Exception:  # noqa: BLE001 — "Unsupported operation" on bodies without live view
        return None
    return grab if data[:2] == b"\xff\xd8" else None


def _decode_jpeg(data: bytes, what: str) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DeviceError(f"{what}: the camera sent an undecodable image ({len(data)} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class DslrSource:
    """Frames from a Dslr: live view when offered (and ``preview``), else full captures.

    The camera is opened and set up (defocused aperture, shutter, ISO…) here, so a missing camera
    fails before anything is recorded; :meth:`close` (called by the live loop, idempotent) releases
    it. Transient device errors are retried (up to CAPTURE_RETRIES with backoff); a simulated DSLR
    moves to the next scene every ``scene_frames`` frames.
    """

    def __init__(self, dslr: Any, cfg: "RigConfig", *, preview: bool = True, scene_frames: int = 0,
                 notes: list[str] | None = None) -> None:
        self.dslr = dslr
        self.scene_frames = int(scene_frames)
        self.notes = notes if notes is not None else []
        self._tmp = tempfile.TemporaryDirectory(prefix="rig-live-")
        self._closed = False
        try:
            dslr.open()
            self.notes += _apply_dslr_settings(dslr, cfg)
            self.grab = _preview_fn(dslr) if preview else None
        except BaseException:
            self.close()
            raise
        self.notes.append("live view (capture_preview)" if self.grab else "full captures (no live view)")

    def _one(self, i: int) -> tuple[bytes, str]:
        from acquisition.protocols import TRANSIENT_ERRORS

        for attempt in range(CAPTURE_RETRIES + 1):
            try:
                if self.grab is not None:
                    return self.grab(), ".jpg"
                shot = self.dslr.capture(Path(self._tmp.name) / f"shot{i % 2}.jpg")
                return Path(shot.path).read_bytes(), Path(shot.path).suffix.lower() or ".jpg"
            except TRANSIENT_ERRORS:
                if attempt == CAPTURE_RETRIES:
                    raise
                time.sleep(0.2 * 2 ** attempt)
        raise AssertionError("unreachable")

    def __iter__(self) -> Iterator[Any]:
        from inference.live import SourceFrame

        rig = getattr(self.dslr, "rig", None)
        i = 0
        while not self._closed:
            if rig is not None and self.scene_frames > 0 and i % self.scene_frames == 0:
                rig.set_scene(i // self.scene_frames)
            data, suffix = self._one(i)
            rgb = _decode_jpeg(data, self.dslr.model)
            scene = f" scene {rig.scene_index}" if rig is not None else ""
            name = f"{self.dslr.model}{scene} #{i}" + (" (preview)" if self.grab else "")
            yield SourceFrame(rgb=rgb, name=name, original=data, original_suffix=suffix,
                              meta={"preview": self.grab is not None})
            i += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.dslr.close()
        finally:
            self._tmp.cleanup()


def open_source(spec: str, cfg: "RigConfig", *, preview: bool = True, scene_frames: int = DEFAULT_SCENE_FRAMES,
                loop: bool = False, speed: float = 0.0, notes: list[str] | None = None,
                on_skip: SkipFn | None = None) -> Any:
    """The frames for ``--source`` (an iterable; a camera source is opened now and has ``close()``).
    Folder and replay sources skip truncated or corrupt images through ``on_skip``."""
    kind, arg = parse_source(spec)
    if kind == "folder":
        list_images(Path(arg or ""))  # fail now, with one line, not inside the capture thread
        return folder_frames(Path(arg or ""), loop=loop, on_skip=on_skip)
    if kind == "replay":
        session_frame_files(Path(arg or ""))
        return replay_frames(Path(arg or ""), loop=loop, speed=speed, on_skip=on_skip)
    if kind == "simulated":
        from acquisition.simulated import SimulatedDslr

        return DslrSource(SimulatedDslr(cfg), cfg, preview=False, scene_frames=scene_frames, notes=notes)
    from acquisition.devices import open_dslr

    return DslrSource(open_dslr(cfg), cfg, preview=preview, scene_frames=scene_frames, notes=notes)


# ----------------------------------------------------------------------------------------------
# Inference backend


@dataclass
class Backend:
    """The inference function of the live loop and what it runs."""

    infer: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
    description: str
    model: str
    onnx: str | None = None
    engine: Any = None
    notes: tuple[str, ...] = ()  # one-line notes/warnings for the user (camind constants, fallbacks)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def onnx_for(model_ref: str, size: tuple[int, int], cache_dir: Path | None = None) -> Path:
    """An exported ONNX depth graph (+ MC companions) for a torch model, cached in ``cache_dir``
    (default $RIG_ONNX_CACHE or ~/.cache/deep-dfd-rig/onnx) by weights digest and input size."""
    from inference.export import UNTRAINED_SEED, companion_paths, export_model, load_net
    from inference.model import MODELS

    w, h = size
    if model_ref in MODELS and not Path(model_ref).exists():
        net, meta, source = load_net(model_ref)
        key = f"{model_ref}-untrained-seed{UNTRAINED_SEED}"
    else:
        from inference.model import resolve_model_path

        p = resolve_model_path(model_ref)
        key = f"{p.stem}-{_file_digest(p)}"
        net = meta = source = None  # type: ignore[assignment]
    out = Path(cache_dir or os.environ.get("RIG_ONNX_CACHE") or ONNX_CACHE) / f"{key}-{w}x{h}.onnx"
    from inference.onnx_graph import moments_path

    if not (out.is_file() and all(p.is_file() for p in (*companion_paths(out), moments_path(out)))):
        if net is None:
            net, meta, source = load_net(model_ref)
        export_model(net, out, height=h, width=w, dynamic=False, source=source, model_meta=meta, check=False)
    return out


def build_backend(model_ref: str | None, *, backend: str = "auto", mc_samples: int = 0,
                  size: tuple[int, int] = (645, 432), threads: int = 0, providers: tuple[str, ...] | None = None,
                  trt_cache: Path | None = None, seed: int = 0, spin: bool = False,
                  onnx_cache: Path | None = None, cfg: "RigConfig | None" = None,
                  uncertainty: str = "") -> Backend:
    """The inference function: onnxruntime (an .onnx file, or a torch model exported and cached) or
    torch eager. ``mc_samples`` >= 2 returns (MC mean, MC std), else (one pass, None). A
    camera-independent (camind) model runs with ``cfg``'s k_cam and γ (default: the simulated
    preset), on onnxruntime or torch alike; see :func:`camind_backend`. ``uncertainty='moments'``: sampling-free
    MC-dropout (:mod:`inference.moments`), (mean, std) in one pass."""
    if uncertainty == "moments" and mc_samples:
        raise RigError("--uncertainty moments: takes no --mc-samples (it is sampling-free)")
    if mc_samples == 1 or mc_samples < 0:
        raise RigError("--mc-samples: use 0 (one deterministic pass) or at least 2 samples")
    ref = model_ref or default_model()
    if backend not in ("auto", "onnx", "torch"):
        raise RigError(f"--backend {backend!r}: choose auto, onnx or torch")
    from inference.camind_use import camind_model_path

    camind_path = camind_model_path(ref)
    if camind_path is not None:
        if uncertainty == "moments":
            raise RigError("--uncertainty moments: camera-independent models have no dropout uncertainty")
        return camind_backend(camind_path, cfg, backend=backend, mc_samples=mc_samples, threads=threads,
                              providers=providers, trt_cache=trt_cache, spin=spin, onnx_cache=onnx_cache,
                              size=size)
    if backend == "auto":
        try:
            import onnxruntime  # noqa: F401

            backend = "onnx"
        except ImportError:
            backend = "torch"
    if backend == "onnx":
        from inference.engine import DEFAULT_PROVIDERS, DEFAULT_TRT_CACHE, DepthEngine, EngineConfig

        path = Path(ref) if str(ref).endswith(".onnx") else onnx_for(ref, size, onnx_cache)
        cfg = EngineConfig(providers=tuple(providers or DEFAULT_PROVIDERS), threads=threads,
                           trt_cache_dir=Path(trt_cache or DEFAULT_TRT_CACHE), spin=spin)
        engine = DepthEngine(path, cfg, warm_size=size, mc=mc_samples >= 2, moments=uncertainty == "moments")
        if uncertainty == "moments":
            def infer(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
                return engine.predict_moments(rgb)
        elif mc_samples >= 2:
            def infer(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
                return engine.predict_mc(rgb, mc_samples)
        elif engine.has_aleatoric and uncertainty != "none":
            def infer(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
                return engine.predict_with_std(rgb)
        else:
            if uncertainty == "aleatoric":
                raise RigError(f"--uncertainty aleatoric: {ref} has no σ head (use mc or moments)")

            def infer(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
                return engine.predict(rgb), None
        return Backend(infer=infer, description=engine.describe(), model=str(ref), onnx=str(path), engine=engine)
    if backend != "torch":
        raise RigError(f"--backend {backend!r}: choose auto, onnx or torch")
    import torch

    from inference.export import load_net
    from inference.predict import predict_image

    if str(ref).endswith(".onnx"):
        raise RigError(f"{ref}: an ONNX file needs --backend onnx (or auto)")
    if threads:
        torch.set_num_threads(threads)
    net, _, _ = load_net(ref)

    def infer_torch(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        # one pass, as the exported ONNX graph: live never doubles its cost with the mirror image
        pred = predict_image(net, rgb, mc_samples=mc_samples, seed=seed, uncertainty=uncertainty, flip_tta=False)
        return pred.depth_m, pred.std_m

    return Backend(infer=infer_torch, description=f"torch eager ({torch.get_num_threads()} thread(s))", model=str(ref))


def camind_onnx_for(path: Path, cache_dir: Path | None = None) -> Path:
    """The camind model file exported to ONNX (k_cam and γ as inputs, any size), cached in
    ``cache_dir`` (default $RIG_ONNX_CACHE or ~/.cache/deep-dfd-rig/onnx) by weights digest."""
    from inference.camind_onnx import export_camind

    folder = Path(cache_dir or os.environ.get("RIG_ONNX_CACHE") or ONNX_CACHE)
    out = folder / f"{path.stem}-{_file_digest(path)}-camind.onnx"
    if not out.is_file():
        from inference.camind import load_camind

        model, meta = load_camind(path)
        export_camind(model, out, height=32, width=48, source=str(path), model_meta=meta, check=False)
    return out


def camind_backend(path: Path, cfg: "RigConfig | None", *, backend: str = "auto", mc_samples: int = 0,
                   threads: int = 0, providers: tuple[str, ...] | None = None, trt_cache: Path | None = None,
                   spin: bool = False, onnx_cache: Path | None = None,
                   size: tuple[int, int] = (645, 432)) -> Backend:
    """A camind model file with k_cam / γ from ``cfg`` (scaled to each frame's width): onnxruntime
    (exported once and cached, :func:`camind_onnx_for`) for ``backend`` onnx, or auto when onnxruntime
    is installed; torch eager otherwise. No dropout (``mc_samples`` > 0 is a RigError)."""
    import torch

    from inference.camind_use import open_camind, refuse_mc_samples

    refuse_mc_samples(mc_samples)
    from rig.core.config import load_rig_config

    runner = open_camind(path, cfg if cfg is not None else load_rig_config("simulated"))
    if backend == "auto":
        try:
            import onnxruntime  # noqa: F401

            backend = "onnx"
        except ImportError:
            backend = "torch"
    if backend == "onnx":
        from inference.camind_onnx import CamindEngine
        from inference.engine import DEFAULT_PROVIDERS, DEFAULT_TRT_CACHE, EngineConfig

        onnx_path = camind_onnx_for(path, onnx_cache)
        ecfg = EngineConfig(providers=tuple(providers or DEFAULT_PROVIDERS), threads=threads,
                            trt_cache_dir=Path(trt_cache or DEFAULT_TRT_CACHE), spin=spin)
        engine = CamindEngine(onnx_path, ecfg, warm_size=size)

        def infer_onnx(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            k, g = runner.constants_at(int(rgb.shape[1]))
            return engine.predict(rgb, k, g), None

        return Backend(infer=infer_onnx, model=str(path), onnx=str(onnx_path), engine=engine,
                       notes=tuple(runner.notes), description=f"{engine.describe()}, camind: {runner.describe()}")
    if threads:
        torch.set_num_threads(threads)

    def infer(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return runner.infer(rgb), None

    return Backend(infer=infer, model=str(path), notes=tuple(runner.notes),
                   description=f"torch eager ({torch.get_num_threads()} thread(s)), camind: {runner.describe()}")


# ----------------------------------------------------------------------------------------------
# Display


def display_available() -> tuple[bool, str]:
    """(True, '') when an OpenCV window can be opened here, else (False, why)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY/WAYLAND_DISPLAY unset)"
    try:
        import cv2

        info = cv2.getBuildInformation()
    except Exception as e:  # noqa: BLE001
        return False, f"OpenCV unavailable ({e})"
    gui = [ln for ln in info.splitlines() if ln.strip().startswith("GUI")]
    if gui and "NONE" in gui[0].upper():
        return False, "this OpenCV build has no GUI (opencv-python-headless?)"
    return True, ""


class Display:
    """The OpenCV window, driven from the main thread: shows the newest view, 'q'/Esc stops."""

    WINDOW = "rig live"

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2
        self.shown = -1
        cv2.namedWindow(self.WINDOW, cv2.WINDOW_NORMAL)

    def tick(self, loop: Any) -> None:
        view = loop.get_view()
        if view is not None and view[0] != self.shown:
            self.shown = view[0]
            self.cv2.imshow(self.WINDOW, self.cv2.cvtColor(view[1], self.cv2.COLOR_RGB2BGR))
        key = self.cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            loop.stop("window closed ('q')")

    def close(self) -> None:
        try:
            self.cv2.destroyWindow(self.WINDOW)
            self.cv2.waitKey(1)
        except Exception:  # noqa: BLE001
            pass


# ----------------------------------------------------------------------------------------------
# Running


@dataclass
class LiveOptions:
    source: str = "dslr"
    model: str | None = None
    backend: str = "auto"
    mc_samples: int = 0
    uncertainty: str = ""
    max_frames: int | None = None
    save: Path | None = None
    show: bool = False
    serve: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    threads: int = 0
    providers: tuple[str, ...] | None = None
    trt_cache: Path | None = None
    preview: bool = True
    scene_frames: int = DEFAULT_SCENE_FRAMES
    loop_source: bool = False
    queue_size: int = 2
    depth_range_m: tuple[float, float] = (0.5, 10.0)
    std_max_m: float = 0.5
    panel: bool = True
    drop: bool = True
    speed: float = 0.0
    onnx_cache: Path | None = None  # where torch models are exported (default $RIG_ONNX_CACHE or ~/.cache)
    ply: bool = False  # also save live/ply/<frame>.ply (coloured point clouds in metres)


def default_save_dir() -> Path:
    return Path("out") / "live" / dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def source_is_simulated(spec: str, cfg: "RigConfig") -> bool:
    """True when ``--source`` gives simulated frames: 'simulated', or 'dslr' with a simulated DSLR."""
    kind = spec.partition(":")[0]
    return kind == "simulated" or (kind == "dslr" and cfg.dslr.driver == "simulated")


def simulated_source_line(cfg: "RigConfig") -> str:
    """The first line of a live run on simulated frames: what it is and how to use a real camera."""
    return (f"live: SIMULATED source (config '{cfg.name}' has a simulated DSLR, no camera is used); for a real "
            "camera pass --config nikon_d200_xtion or your rig's YAML with dslr.driver: gphoto2")


def source_label(spec: str, cfg: "RigConfig") -> str:
    """``--source`` as shown in the log and the panel title ('simulated dslr' for a simulated DSLR)."""
    return f"simulated {spec}" if spec == "dslr" and source_is_simulated(spec, cfg) else spec


def run_live(cfg: "RigConfig", opts: LiveOptions, print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """Build source, backend, recorder, sinks; run the loop; returns the summary (+ paths)."""
    if opts.max_frames is not None and opts.max_frames < 1:
        raise RigError("--max-frames: must be >= 1")
    lo, hi = opts.depth_range_m
    if not 0 <= lo < hi:
        raise RigError(f"--depth-range: expected 0 <= LO < HI, got {lo:g} {hi:g}")
    notes: list[str] = []
    simulated = source_is_simulated(opts.source, cfg)
    if simulated:
        print_fn(simulated_source_line(cfg))
    skipped: list[str] = []

    def skip(line: str) -> None:
        skipped.append(line)
        print_fn(f"skipped {line}")

    source = open_source(opts.source, cfg, preview=opts.preview, scene_frames=opts.scene_frames,
                         loop=opts.loop_source, speed=opts.speed, notes=notes, on_skip=skip)
    try:
        out = _run_live_with(cfg, opts, source, notes, print_fn)
        out["skipped"] = list(skipped)
        return out
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _run_live_with(cfg: "RigConfig", opts: LiveOptions, source: Any, notes: list[str],
                   print_fn: Callable[[str], None]) -> dict[str, Any]:
    from rig.core.session import Session

    size = tuple(int(v) for v in cfg.output.size_px)
    lo, hi = opts.depth_range_m
    backend = build_backend(opts.model, backend=opts.backend, mc_samples=opts.mc_samples,
                            uncertainty=opts.uncertainty, size=size,  # type: ignore[arg-type]
                            threads=opts.threads, providers=opts.providers, trt_cache=opts.trt_cache,
                            onnx_cache=opts.onnx_cache, cfg=cfg)
    for note in backend.notes:
        print_fn(note)
    save = Path(opts.save) if opts.save else default_save_dir()
    session = Session.create(save, cfg)
    try:
        out = _record_live(cfg, opts, source, notes, print_fn, backend, session)
    except BaseException:
        session.discard_if_no_data(LIVE_BOOKKEEPING)  # a failed start leaves no empty session behind
        raise
    if out["frames_captured"] == 0 and session.discard_if_no_data(LIVE_BOOKKEEPING):
        print_fn(f"no frame captured; {session.path} not kept")
    return out


LIVE_BOOKKEEPING = ("live/live.yaml", "live/depth/camera_intrinsic.json")  # written by every live run, frames or not


def _record_live(cfg: "RigConfig", opts: LiveOptions, source: Any, notes: list[str],
                 print_fn: Callable[[str], None], backend: Backend, session: Any) -> dict[str, Any]:
    """The recording part of a live run, into ``session`` (see :func:`run_live`)."""
    from inference.live import LiveLoop, LiveRecorder, stats_table

    size = tuple(int(v) for v in cfg.output.size_px)
    lo, hi = opts.depth_range_m
    info = {"source": opts.source, "model": backend.model, "onnx": backend.onnx, "engine": backend.description,
            "size_px": list(size), "mc_samples": int(opts.mc_samples), "config": cfg.name,
            "depth_range_m": [float(lo), float(hi)], "drop_policy": "drop-oldest" if opts.drop else "block"}
    from rig.core.pointcloud import dslr_intrinsics_at

    recorder = LiveRecorder(session.path, info, intrinsics=dslr_intrinsics_at(cfg, *size), ply=opts.ply)
    sinks = []
    server = None
    if opts.serve:
        from rig.serve import LiveServer

        loop_ref: dict[str, Any] = {}

        def stats() -> dict[str, Any]:
            lp = loop_ref.get("loop")
            return {} if lp is None else {"fps": lp.stats.fps(), **lp.stats.counts}

        server = LiveServer(opts.host, opts.port, stats=stats, title=f"rig live — {cfg.name}").start()
        sinks.append(lambda result, view: server.publish_rgb(view, result.frame.index))
        print_fn(f"viewer: {server.url}" + ("  (token required; printed once)" if server.token else ""))
    display = None
    if opts.show:
        ok, why = display_available()
        if ok:
            try:
                display = Display()
            except Exception as e:  # noqa: BLE001 — e.g. the display refuses the connection
                print_fn(f"--show: cannot open a window ({str(e).splitlines()[0]}); running without one")
        else:
            print_fn(f"--show: {why}; running without a window")
    loop = LiveLoop(source, backend.infer, size=size, sinks=sinks, recorder=recorder,  # type: ignore[arg-type]
                    queue_size=opts.queue_size, drop=opts.drop, max_frames=opts.max_frames,
                    depth_range_m=(float(lo), float(hi)), std_max_m=opts.std_max_m)
    if server is not None:
        loop_ref["loop"] = loop
    label = source_label(opts.source, cfg)
    print_fn(f"live: {label} -> {backend.model} on {backend.description}"
             + (f", MC-dropout {opts.mc_samples} samples" if opts.mc_samples else "")
             + f"; recording to {session.path}  (Ctrl-C stops)")
    panel = None
    if opts.panel and sys.stdout.isatty():
        from rich.live import Live

        panel = Live(stats_table(loop, f"rig live — {label}"), refresh_per_second=4, transient=False)
        panel.start()
    last_panel = [0.0]

    def tick(lp: Any) -> None:
        if display is not None:
            display.tick(lp)
        now = time.monotonic()
        if panel is not None and now - last_panel[0] > 0.25:
            last_panel[0] = now
            panel.update(stats_table(lp, f"rig live — {label}"))

    try:
        summary = loop.run(on_tick=tick, tick_s=0.03 if display is not None else 0.1)
    finally:
        if panel is not None:
            panel.update(stats_table(loop, f"rig live — {label}"))
            panel.stop()
        if display is not None:
            display.close()
        if server is not None:
            server.stop()
        if backend.engine is not None:
            backend.engine.close()
    for n in notes:
        if n.startswith(("live view", "full captures")):
            print_fn(f"source: {n}")
    med = summary.median_ms
    print_fn(f"{summary.frames_captured} frame(s) captured, {summary.frames_inferred} inferred, "
             f"{summary.frames_output} saved, {summary.dropped} dropped; {summary.fps_text()}; median infer "
             f"{(med.get('infer') or 0):.0f} ms, end-to-end {(med.get('end_to_end') or 0):.0f} ms; "
             f"stopped by {summary.stopped_by}")
    print_fn(f"session: {session.path} (replay: rig replay {session.path})")
    out = summary.to_dict()
    out.update({"session": str(session.path), "engine": backend.description, "model": backend.model,
                "onnx": backend.onnx})
    return out
