"""The Deep Learning Accelerator (DLA) of Jetson AGX / NX boards: engines whose layers run on a
DLA core, leaving the GPU free for other work (preprocessing, a second model).

TensorRT's rules (developer guide, "Working with DLA"): DLA computes in FP16 or INT8 only;
it takes no dynamic dimensions (the profile's min, opt and max are one shape, batch
included, and the engine runs at that shape only); a layer the DLA cannot run goes to the GPU
when GPU fallback is on (dbrt always turns it on, as `trtexec --allowGPUFallback` does), each
change of device costing a copy. The core an engine runs on is the runtime's choice
(`IRuntime.DLA_core`), so an engine built on core 0 may run on core 1.
"""
from __future__ import annotations

from typing import Optional

from ..errors import ModelError, ShapeError
from ..shapes import ShapeProfile


def has_dla_api(trt) -> bool:
    """TensorRT names the DLA device type (8.6 / 10.x; 11.x on the platforms that have DLA)."""
    return hasattr(getattr(trt, "DeviceType", None), "DLA")


def dla_core_count(trt, builder_or_runtime) -> int:
    """DLA cores on this device (0 on GPUs without one, and where the API lacks DLA)."""
    if not has_dla_api(trt):
        return 0
    return int(getattr(builder_or_runtime, "num_DLA_cores", 0) or 0)


def check_dla_core(core: int, available: int, version: str, what: str = "asked for") -> None:
    """`what`: how the core came to be wanted ("asked for", or an engine's "built for")."""
    if core < 0:
        raise ModelError(f"a DLA core is numbered from 0, got {core}")
    if core >= available and available:
        raise ModelError(f"DLA core {core} {what}; this device has {available} "
                         f"(cores 0..{available - 1})")
    if core >= available:
        raise ModelError(f"DLA core {core} {what}, and this device has no DLA for TensorRT "
                         f"{version} (Jetson AGX / NX boards have one or two): drop --dla-core")


def check_dla_build(precision: str, profile: ShapeProfile) -> None:
    """What the DLA cannot take, refused before a build of minutes."""
    if precision not in ("fp16", "int8"):
        raise ModelError(f"DLA computes in FP16 or INT8, not {precision}: build FP16 or INT8 "
                         "(dbrt build --precision; on TensorRT 11.x, which builds the ONNX's own "
                         "precision, an FP16 or Q/DQ INT8 ONNX from dbrt export --precision)")
    if not profile.min == profile.opt == profile.max:
        raise ShapeError(f"DLA runs one input shape, not the range {profile.describe()}: give "
                         "one shape (--opt HxW with --batch N, no --min / --max)")


def configure_dla(trt, network, config, core: int) -> dict:
    """Put the network's layers on DLA core `core`, the others on the GPU; returns what the
    engine's record keeps: the core and how many layers the DLA cannot run by TensorRT's
    per-layer check (`can_run_on_DLA`; the builder may still move a layer to the GPU when a
    combination of layers exceeds what the DLA holds, which only the engine inspector shows)."""
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(core)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    on_gpu = [layer.name for layer in layers if not config.can_run_on_DLA(layer)]
    return {"core": int(core), "layers": len(layers), "gpu_fallback_layers": len(on_gpu),
            "gpu_fallback_examples": on_gpu[:5]}


def dla_summary(dla: dict) -> str:
    """The record's DLA entry in words, as `dbrt build` and `dbrt info` show it."""
    return (f"DLA core {dla['core']}: {dla['layers'] - dla['gpu_fallback_layers']} of "
            f"{dla['layers']} layers the DLA can run (TensorRT's per-layer check)")


def use_dla_core(trt, runtime, asked: Optional[int], record, engine_name: str) -> Optional[int]:
    """Before deserializing: the runtime loads the engine's DLA parts on the core asked for,
    else on the one its record names; returns that core (None: a GPU engine, or one built
    elsewhere whose core TensorRT picks)."""
    built = recorded_dla_core(record)
    if asked is not None and built is None and record is not None:  # setting the core does nothing
        raise ModelError(f"engine {engine_name} runs on the GPU (its record names no DLA core): "
                         "--dla-core moves a DLA engine to another core; build one with "
                         "dbrt build --dla-core N")
    core = built if asked is None else asked
    if core is None:
        return None
    available = dla_core_count(trt, runtime)
    if asked is None and not available:
        raise ModelError(f"engine {engine_name} was built for DLA core {built}, and this device "
                         "has no DLA: rebuild it here without --dla-core")
    try:
        check_dla_core(core, available, trt.__version__, "asked for" if asked is not None else "built for")
    except ModelError as exc:
        move = "; run it on one of them with --dla-core" if asked is None else ""
        raise ModelError(f"engine {engine_name}: {exc}{move}") from None
    runtime.DLA_core = int(core)
    return core


def recorded_dla_core(record) -> Optional[int]:
    """The DLA core an engine's record says it was built for (None: a GPU engine)."""
    dla = (record.builder or {}).get("dla") if record is not None else None
    return int(dla["core"]) if isinstance(dla, dict) and "core" in dla else None
