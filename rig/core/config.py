"""Rig configuration: one YAML file drives every stage (Open3D reconstruction-system style).

``load_rig_config(path)`` validates every key (type, unit, range, allowed values, unknown keys)
and returns a frozen :class:`RigConfig`. Any problem raises :class:`~rig.core.errors.ConfigError` with
one line naming the file, the dotted key and what is allowed; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from rig.core.errors import ConfigError
from rig.core.optics import Lens

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"

_REQUIRED = object()


@dataclass(frozen=True)
class Spec:
    """How one config value is validated."""

    kind: str  # "float" | "int" | "str" | "bool" | "list" | "path"
    unit: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo excluded
    choices: tuple[Any, ...] | None = None
    default: Any = _REQUIRED
    item: "Spec | None" = None  # for lists
    length: int | None = None  # exact list length
    min_length: int = 0
    nullable: bool = False
    help: str = ""

    def describe(self) -> str:
        """What is allowed, for the error message."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "list":
            n = f"{self.length} " if self.length else ""
            inner = self.item.describe() if self.item else "values"
            return f"a list of {n}{inner}".replace("a list of 1 ", "a list of one ")
        unit = f" {self.unit}" if self.unit else ""
        kind = {"float": "a number", "int": "an integer", "str": "a string", "bool": "true or false",
                "path": "a file path"}[self.kind]
        if self.lo is not None and self.hi is not None:
            left = "(" if self.lo_open else "["
            return f"{kind} in {left}{self.lo:g}, {self.hi:g}]{unit}"
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}{unit}"
        return f"{kind}{unit}"


def _f(lo: float | None = None, hi: float | None = None, unit: str = "", default: Any = _REQUIRED,
       lo_open: bool = False, nullable: bool = False) -> Spec:
    return Spec("float", unit=unit, lo=lo, hi=hi, default=default, lo_open=lo_open, nullable=nullable)


def _i(lo: float | None = None, hi: float | None = None, unit: str = "", default: Any = _REQUIRED) -> Spec:
    return Spec("int", unit=unit, lo=lo, hi=hi, default=default)


def _s(choices: tuple[Any, ...] | None = None, default: Any = _REQUIRED, nullable: bool = False) -> Spec:
    return Spec("str", choices=choices, default=default, nullable=nullable)


def _size(default: Any = _REQUIRED) -> Spec:
    return Spec("list", item=_i(16, 20000, "px"), length=2, default=default)


def _vec3(unit: str, lo: float, hi: float, default: Any) -> Spec:
    return Spec("list", item=_f(lo, hi, unit), length=3, default=default)


FAULT_KINDS = ("busy", "disconnect", "timeout", "truncated")
DSLR_DRIVERS = ("gphoto2", "simulated")
DEPTH_DRIVERS = ("openni", "realsense", "simulated", "none")

# The whole schema. Sections missing from a file take their defaults; unknown keys are errors.
SCHEMA: dict[str, Any] = {
    "name": _s(),
    "description": _s(default=""),
    "dslr": {
        "driver": _s(DSLR_DRIVERS, default="simulated"),
        "model": _s(default="unknown"),
        "sensor_px": _size(),
        "pixel_um": _f(0.5, 30.0, "µm", lo_open=True),
        "focal_mm": _f(1.0, 2000.0, "mm"),
        "f_number_defocused": _f(0.7, 64.0),
        "f_number_all_in_focus": _f(0.7, 64.0),
        "iso": _i(25, 409600, default=100),
        "shutter_s": _f(1e-5, 60.0, "s", default=0.01),
        "focus_m": _f(0.1, 1000.0, "m"),
        "focus_presets_m": Spec("list", item=_f(0.1, 1000.0, "m"), min_length=1, default=None, nullable=True),
        "image_format": _s(("jpeg", "raw", "raw+jpeg"), default="jpeg"),
        "capture_target": _s(("sdram", "card"), default="sdram"),
        "exposure_match": _s(("shutter", "iso"), default="shutter"),
    },
    "output": {
        "size_px": _size(default=[645, 432]),
        # hole filling stops this far (output px) from the nearest measured depth; null = fill all
        "max_fill_px": _f(0.0, 1e5, "px", default=None, nullable=True, lo_open=True),
    },
    "blur": {
        "psf": _s(("gaussian", "disk"), default="gaussian"),
        "rho": _f(0.05, 2.0, default=0.3),
        "gamma_px": _f(0.0, 20.0, "px", default=0.0),
        "max_layer_step_px": _f(0.05, 4.0, "px", default=0.5),
        "k_cam_px": _f(0.0, 1e6, "px", default=None, nullable=True, lo_open=True),
    },
    "depth_sensor": {
        "driver": _s(DEPTH_DRIVERS, default="none"),
        "model": _s(default="unknown"),
        "size_px": _size(default=[640, 480]),
        "depth_scale_m": _f(1e-6, 1.0, "m", default=0.001),
        "min_m": _f(0.05, 100.0, "m", default=0.5),
        "max_m": _f(0.1, 100.0, "m", default=8.0),
        "burst_frames": _i(1, 300, default=5),
        "fps": _i(1, 300, default=30),
        "hfov_deg": _f(10.0, 170.0, "deg", default=58.0),
        "mirror": Spec("bool", default=False),
        "registration": Spec("bool", default=False),
    },
    "calibration": {
        "geometry": Spec("path", default=None, nullable=True),
        "blur": Spec("path", default=None, nullable=True),
    },
    "simulated": {
        "seed": _i(0, 2**31 - 1, default=0),
        "scenes": _s(("indoor", "outdoor", "mixed"), default="mixed"),
        "depth_range_m": Spec("list", item=_f(0.1, 100.0, "m"), length=2, default=[0.5, 8.0]),
        "sensor_offset_mm": _vec3("mm", -500.0, 500.0, [-60.0, -40.0, 10.0]),
        "sensor_rotation_deg": _vec3("deg", -20.0, 20.0, [0.5, -1.0, 0.3]),
        "latency_scale": _f(0.0, 10.0, default=1.0),
        "noise": Spec("bool", default=True),
    },
    "faults": {
        "rate": _f(0.0, 1.0, default=0.0),
        "kinds": Spec("list", item=_s(FAULT_KINDS), default=list(FAULT_KINDS)),
    },
    "session": {
        "min_free_mb": _f(0.0, 1e7, "MB", default=200.0),
        "retries": _i(0, 100, default=3),
    },
}


@dataclass(frozen=True)
class DslrConfig:
    driver: str
    model: str
    sensor_px: tuple[int, int]  # (width, height)
    pixel_um: float
    focal_mm: float
    f_number_defocused: float
    f_number_all_in_focus: float
    iso: int
    shutter_s: float
    focus_m: float
    focus_presets_m: tuple[float, ...]
    image_format: str
    capture_target: str
    exposure_match: str


@dataclass(frozen=True)
class OutputConfig:
    size_px: tuple[int, int]  # (width, height)
    max_fill_px: float | None = None  # filling stops this far from measured depth (None: everywhere)


@dataclass(frozen=True)
class BlurConfig:
    psf: str
    rho: float
    gamma_px: float
    max_layer_step_px: float
    k_cam_px: float | None  # measured by `rig calibrate blur`; None = from the thin-lens model


@dataclass(frozen=True)
class DepthSensorConfig:
    driver: str
    model: str
    size_px: tuple[int, int]
    depth_scale_m: float
    min_m: float
    max_m: float
    burst_frames: int
    fps: int
    hfov_deg: float
    mirror: bool
    registration: bool


@dataclass(frozen=True)
class CalibrationConfig:
    geometry: Path | None
    blur: Path | None


@dataclass(frozen=True)
class SimulatedConfig:
    seed: int
    scenes: str
    depth_range_m: tuple[float, float]
    sensor_offset_mm: tuple[float, float, float]
    sensor_rotation_deg: tuple[float, float, float]
    latency_scale: float
    noise: bool


@dataclass(frozen=True)
class FaultsConfig:
    rate: float
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class SessionConfig:
    min_free_mb: float
    retries: int


@dataclass(frozen=True)
class RigConfig:
    """A validated rig preset. ``raw`` is the normalised dict (defaults filled) for snapshots."""

    name: str
    description: str
    dslr: DslrConfig
    output: OutputConfig
    blur: BlurConfig
    depth_sensor: DepthSensorConfig
    calibration: CalibrationConfig
    simulated: SimulatedConfig
    faults: FaultsConfig
    session: SessionConfig
    path: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def downsample(self) -> float:
        """Sensor pixels per output pixel (3872 / 645 ≈ 6.0 for the D200)."""
        return self.dslr.sensor_px[0] / self.output.size_px[0]

    def lens(self, aperture: str = "defocused", focus_m: float | None = None) -> Lens:
        """The thin-lens model at output resolution; aperture 'defocused' or 'all_in_focus'."""
        if aperture not in ("defocused", "all_in_focus"):
            raise ValueError("aperture must be 'defocused' or 'all_in_focus'")
        n = self.dslr.f_number_defocused if aperture == "defocused" else self.dslr.f_number_all_in_focus
        lens = Lens(focal_mm=self.dslr.focal_mm, f_number=n, pixel_um=self.dslr.pixel_um,
                    focus_m=self.dslr.focus_m if focus_m is None else float(focus_m),
                    downsample=self.downsample)
        if self.blur.k_cam_px is None:
            return lens
        # blur.k_cam_px was measured at the defocused aperture and dslr.focus_m: keep the ratio
        # measured / thin-lens, valid for the other aperture and focus distances too
        from rig.core import optics

        nominal = optics.k_cam_px(Lens(focal_mm=self.dslr.focal_mm, f_number=self.dslr.f_number_defocused,
                                       pixel_um=self.dslr.pixel_um, focus_m=self.dslr.focus_m,
                                       downsample=self.downsample))
        return replace(lens, k_cam_scale=float(self.blur.k_cam_px) / nominal)

    @property
    def focus_presets_m(self) -> tuple[float, ...]:
        return self.dslr.focus_presets_m or (self.dslr.focus_m,)

    def snapshot_id(self) -> str:
        """Short content hash of the normalised config (identifies the snapshot in sessions)."""
        blob = json.dumps(self.raw, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(self.raw), sort_keys=False)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _check_value(spec: Spec, value: Any, where: str, src: str, base_dir: Path | None) -> Any:
    def bad(got: Any) -> ConfigError:
        return ConfigError(f"{src}: {where}: expected {spec.describe()}, got {got!r}")

    if value is None:
        if spec.nullable:
            return None
        raise bad(value)
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise bad(value)
        return value
    if spec.kind in ("float", "int"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(value)
        if spec.kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
            raise bad(value)
        v: float = float(value) if spec.kind == "float" else int(value)
        if v != v or v in (float("inf"), float("-inf")):
            raise bad(value)
        if spec.lo is not None and (v < spec.lo or (spec.lo_open and v <= spec.lo)):
            raise bad(value)
        if spec.hi is not None and v > spec.hi:
            raise bad(value)
        if spec.choices is not None and v not in spec.choices:
            raise bad(value)
        return v
    if spec.kind in ("str", "path"):
        if not isinstance(value, str) or (spec.kind == "path" and not value.strip()):
            raise bad(value)
        if spec.choices is not None and value not in spec.choices:
            raise bad(value)
        if spec.kind == "path":
            p = Path(value).expanduser()
            if not p.is_absolute() and base_dir is not None:
                p = (base_dir / p)
            return p
        return value
    if spec.kind == "list":
        if not isinstance(value, (list, tuple)):
            raise bad(value)
        if spec.length is not None and len(value) != spec.length:
            raise bad(value)
        if len(value) < spec.min_length:
            raise bad(value)
        assert spec.item is not None
        return tuple(_check_value(spec.item, v, f"{where}[{i}]", src, base_dir) for i, v in enumerate(value))
    raise AssertionError(spec.kind)


def _validate(schema: Mapping[str, Any], data: Any, prefix: str, src: str, base_dir: Path | None) -> dict[str, Any]:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{src}: {prefix or 'top level'}: expected a mapping of keys, got {type(data).__name__}")
    unknown = [k for k in data if k not in schema]
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(f"{src}: {key}: unknown key; allowed here: {', '.join(schema)}")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        where = f"{prefix}.{key}" if prefix else key
        if isinstance(spec, dict):
            out[key] = _validate(spec, data.get(key), where, src, base_dir)
            continue
        if key not in data:
            if spec.default is _REQUIRED:
                raise ConfigError(f"{src}: {where}: missing; expected {spec.describe()}")
            out[key] = copy.deepcopy(spec.default)
            if isinstance(out[key], list):
                out[key] = tuple(out[key])
            continue
        out[key] = _check_value(spec, data[key], where, src, base_dir)
    return out


def _cross_checks(d: dict[str, Any], src: str) -> None:
    ds = d["dslr"]
    if ds["focus_m"] * 1000.0 <= ds["focal_mm"]:
        raise ConfigError(f"{src}: dslr.focus_m: must exceed the focal length ({ds['focal_mm']} mm)")
    for i, f in enumerate(ds["focus_presets_m"] or ()):
        if f * 1000.0 <= ds["focal_mm"]:
            raise ConfigError(f"{src}: dslr.focus_presets_m[{i}]: must exceed the focal length")
    if ds["f_number_all_in_focus"] <= ds["f_number_defocused"]:
        raise ConfigError(f"{src}: dslr.f_number_all_in_focus: must be larger than f_number_defocused "
                          f"({ds['f_number_defocused']:g}), got {ds['f_number_all_in_focus']:g}")
    ow, oh = d["output"]["size_px"]
    sw, sh = ds["sensor_px"]
    if ow > sw or oh > sh:
        raise ConfigError(f"{src}: output.size_px: must not exceed dslr.sensor_px {sw}x{sh}, got {ow}x{oh}")
    dsn = d["depth_sensor"]
    if dsn["min_m"] >= dsn["max_m"]:
        raise ConfigError(f"{src}: depth_sensor.min_m: must be below depth_sensor.max_m ({dsn['max_m']:g} m)")
    lo, hi = d["simulated"]["depth_range_m"]
    if lo >= hi:
        raise ConfigError(f"{src}: simulated.depth_range_m: expected [near, far] with near < far, got {[lo, hi]}")


def rig_config_from_dict(data: Any, src: str = "<config>", base_dir: Path | None = None,
                         path: Path | None = None) -> RigConfig:
    """Validate a parsed YAML mapping and build the record."""
    d = _validate(SCHEMA, data, "", src, base_dir)
    _cross_checks(d, src)
    ds = d["dslr"]
    return RigConfig(
        name=d["name"], description=d["description"],
        dslr=DslrConfig(
            driver=ds["driver"], model=ds["model"], sensor_px=ds["sensor_px"], pixel_um=ds["pixel_um"],
            focal_mm=ds["focal_mm"], f_number_defocused=ds["f_number_defocused"],
            f_number_all_in_focus=ds["f_number_all_in_focus"], iso=int(ds["iso"]), shutter_s=ds["shutter_s"],
            focus_m=ds["focus_m"], focus_presets_m=tuple(ds["focus_presets_m"] or ()),
            image_format=ds["image_format"], capture_target=ds["capture_target"],
            exposure_match=ds["exposure_match"]),
        output=OutputConfig(size_px=d["output"]["size_px"], max_fill_px=d["output"]["max_fill_px"]),
        blur=BlurConfig(**d["blur"]),
        depth_sensor=DepthSensorConfig(**d["depth_sensor"]),
        calibration=CalibrationConfig(**d["calibration"]),
        simulated=SimulatedConfig(**d["simulated"]),
        faults=FaultsConfig(rate=d["faults"]["rate"], kinds=tuple(d["faults"]["kinds"])),
        session=SessionConfig(**d["session"]),
        path=path,
        raw=_plain(d),
    )


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A file path, or a preset name ('simulated' -> configs/rig/simulated.yaml)."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / "rig" / f"{name_or_path}.yaml", CONFIG_DIR / "rig" / str(name_or_path)):
        if cand.is_file():
            return cand
    presets = ", ".join(sorted(x.stem for x in (CONFIG_DIR / "rig").glob("*.yaml")))
    raise ConfigError(f"{name_or_path}: no such config file or preset (presets: {presets})")


class _DuplicateKey(yaml.YAMLError):
    """A mapping repeats a key (YAML would keep the last one silently)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, naming the key and both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[arg-type]
            line = key_node.start_mark.line + 1
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if seen is not None:
                raise _DuplicateKey(f"duplicate key {key!r} at lines {seen} and {line}; keep one")
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; any read/parse problem (a duplicate key too) becomes a one-line ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None


def load_rig_config(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> RigConfig:
    """Load and validate a rig preset; ``overrides`` maps dotted keys to values (CLI flags)."""
    path = resolve_config_path(name_or_path)
    data = read_yaml(path)
    if overrides:
        if not isinstance(data, dict):
            data = {} if data is None else data
        for dotted, value in overrides.items():
            if not isinstance(data, dict):
                break
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
    return rig_config_from_dict(data, src=str(path), base_dir=path.parent, path=path)


# ------------------------------------------------------------------ editing a config file in place
def _set_key_in_section(lines: list[str], section: str, key: str, value: str) -> list[str]:
    """Replace ``key``'s value inside top-level ``section`` (keeping indentation and a trailing
    comment), or insert ``  key: value`` right after the section header; append the section if absent."""
    out = list(lines)
    start = next((i for i, ln in enumerate(out) if re.match(rf"^{re.escape(section)}\s*:\s*(#.*)?$", ln)), None)
    if start is None:
        if out and out[-1].strip():
            out.append("")
        return out + [f"{section}:", f"  {key}: {value}"]
    end = next((j for j in range(start + 1, len(out))
                if out[j] and not out[j][0].isspace() and not out[j].startswith("#")), len(out))
    pat = re.compile(rf"^(\s+{re.escape(key)}\s*:\s*)([^#]*?)(\s+#.*)?$")
    for j in range(start + 1, end):
        m = pat.match(out[j])
        if m:
            out[j] = f"{m.group(1)}{value}{m.group(3) or ''}"
            return out
    indent = next((re.match(r"^(\s+)", out[j]).group(1) for j in range(start + 1, end)  # type: ignore[union-attr]
                   if out[j].strip() and not out[j].lstrip().startswith("#")), "  ")
    out.insert(start + 1, f"{indent}{key}: {value}")
    return out


def update_config_file(path: Path, values: Mapping[str, str]) -> RigConfig:
    """Set ``section.key`` values (YAML scalars as text) in a rig config file, keeping its comments and
    layout; the edited text is validated with :func:`load_rig_config` before it atomically replaces
    the file (ConfigError and the file unchanged otherwise). Returns the new config."""
    from rig.core.imageio import atomic_write_bytes

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    for dotted, value in values.items():
        section, _, key = dotted.partition(".")
        if not key or "." in key:
            raise ValueError(f"expected 'section.key', got {dotted!r}")
        lines = _set_key_in_section(lines, section, key, str(value))
    new_text = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
    tmp = path.with_name(f".{path.name}.edit.yaml")
    tmp.write_text(new_text, encoding="utf-8")
    try:
        load_rig_config(tmp)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_bytes(path, new_text.encode("utf-8"))
    return load_rig_config(path)


def config_with_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """The config with dotted-key overrides applied (validated again)."""
    import copy

    if not overrides:
        return cfg
    raw = copy.deepcopy(dict(cfg.raw))
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return rig_config_from_dict(raw, src=f"{cfg.path or cfg.name} (with command-line overrides)", path=cfg.path)
