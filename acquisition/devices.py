"""Opening the rig's devices by the config's driver names, and listing what is attached.

``dslr.driver``: gphoto2 -> :class:`acquisition.gphoto2_driver.Gphoto2Dslr`, simulated ->
:class:`acquisition.simulated.SimulatedDslr`. ``depth_sensor.driver``: realsense ->
``acquisition.realsense_driver.RealSenseSensor``, openni -> ``acquisition.openni_driver.OpenNISensor``,
simulated -> :class:`acquisition.simulated.SimulatedDepthSensor`, none -> no sensor. Driver modules
are imported only when used, so a missing device library only matters for the rig that needs it.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from acquisition.protocols import DepthSensor, Dslr
from rig.core.config import RigConfig
from rig.core.errors import DeviceError

# kind -> driver -> (module, class)
DRIVERS: dict[str, dict[str, tuple[str, str]]] = {
    "dslr": {
        "gphoto2": ("acquisition.gphoto2_driver", "Gphoto2Dslr"),
        "simulated": ("acquisition.simulated", "SimulatedDslr"),
    },
    "depth": {
        "realsense": ("acquisition.realsense_driver", "RealSenseSensor"),
        "openni": ("acquisition.openni_driver", "OpenNISensor"),
        "simulated": ("acquisition.simulated", "SimulatedDepthSensor"),
    },
}
NOT_INSTALLED = "driver not installed"


def _driver_class(kind: str, driver: str) -> type:
    try:
        module_name, cls_name = DRIVERS[kind][driver]
    except KeyError:
        raise DeviceError(f"unknown {kind} driver {driver!r} (known: {', '.join(DRIVERS[kind])})",
                          exit_code=2) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise DeviceError(f"{kind} driver {driver!r}: {NOT_INSTALLED} in this build ({module_name})") from None
        raise DeviceError(f"{kind} driver {driver!r} needs {e.name}, which is not installed") from None
    try:
        return getattr(module, cls_name)
    except AttributeError:
        raise DeviceError(f"{kind} driver {driver!r}: {module_name} has no {cls_name}") from None


def _construct(cls: type, cfg: RigConfig, section: Any) -> Any:
    """A real driver from the config: ``cls.from_config(section)`` (the config's ``dslr`` or
    ``depth_sensor`` section) when it has one, else ``cls(cfg)`` when its first parameter is the
    config, else ``cls()``."""
    factory = getattr(cls, "from_config", None)
    if callable(factory):
        return factory(section)
    params = [p for p in inspect.signature(cls).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if params and params[0].name in ("cfg", "config", "rig_config"):
        return cls(cfg)
    return cls()


def open_dslr(cfg: RigConfig, rig: Any = None) -> Dslr:
    """The configured DSLR (not yet opened). ``rig``: a SimulatedRig to share with the sensor."""
    cls = _driver_class("dslr", cfg.dslr.driver)
    if cfg.dslr.driver == "simulated":
        return cls(cfg, rig)
    return _construct(cls, cfg, cfg.dslr)


def open_depth_sensor(cfg: RigConfig, rig: Any = None) -> DepthSensor | None:
    """The configured depth sensor (not yet started), or None for driver 'none'."""
    if cfg.depth_sensor.driver == "none":
        return None
    cls = _driver_class("depth", cfg.depth_sensor.driver)
    if cfg.depth_sensor.driver == "simulated":
        return cls(cfg, rig)
    return _construct(cls, cfg, cfg.depth_sensor)


@dataclass
class RigDevices:
    """The devices of one rig and how to move to a scene (the simulated world, when there is one)."""

    dslr: Dslr
    sensor: DepthSensor | None
    simulated_rig: Any = None  # acquisition.simulated.SimulatedRig when any device is simulated

    def scene_hook(self) -> Callable[[int], Any]:
        from acquisition.capture import SceneInfo, default_scene_hook

        rig = self.simulated_rig
        if rig is None:
            return default_scene_hook

        def hook(index: int) -> SceneInfo:
            scene = rig.set_scene(index)
            return SceneInfo(scene_id=scene.scene_id, extra={"scene": scene.describe()})

        return hook


def open_rig(cfg: RigConfig) -> RigDevices:
    """DSLR + depth sensor for the config; simulated devices share one world."""
    rig = None
    if "simulated" in (cfg.dslr.driver, cfg.depth_sensor.driver):
        from acquisition.simulated import SimulatedRig

        rig = SimulatedRig(cfg)
    return RigDevices(dslr=open_dslr(cfg, rig), sensor=open_depth_sensor(cfg, rig), simulated_rig=rig)


# --------------------------------------------------------------------------------------- detection
DETECT_MODULES: tuple[tuple[str, str, str], ...] = (
    ("dslr", "gphoto2", "acquisition.gphoto2_driver"),
    ("depth", "realsense", "acquisition.realsense_driver"),
    ("depth", "openni", "acquisition.openni_driver"),
)


def _detect(module_name: str) -> tuple[list[str], str]:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            return [], NOT_INSTALLED
        return [], f"needs {e.name}, which is not installed"
    except Exception as e:  # noqa: BLE001 - listing must not fail on one broken driver
        return [], f"driver failed to load: {type(e).__name__}: {e}"
    detect = getattr(module, "detect", None)
    if not callable(detect):
        return [], "driver has no detect()"
    try:
        found, reason = detect()
    except Exception as e:  # noqa: BLE001
        return [], f"detection failed: {type(e).__name__}: {e}"
    return [str(x) for x in found], str(reason or "")


def list_devices(include_simulated: bool = True) -> list[tuple[str, str, str]]:
    """(kind, name, status) rows: every attached device, or each driver's reason for finding none."""
    rows: list[tuple[str, str, str]] = []
    for kind, driver, module_name in DETECT_MODULES:
        found, reason = _detect(module_name)
        if found:
            rows += [(kind, f"{driver}: {name}", "attached") for name in found]
        else:
            rows.append((kind, driver, reason or "nothing found"))
    if include_simulated:
        rows.append(("dslr", "simulated: virtual DSLR", "available (embedded default, no hardware needed)"))
        rows.append(("depth", "simulated: virtual Kinect-like sensor", "available (embedded default)"))
    return rows
