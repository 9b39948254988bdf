"""Loads the native library torchcorr._C, or explains in plain words why it could not."""

import json
import os
import warnings

import torch

_BUILD_RECORD = os.path.join(os.path.dirname(__file__), "_build.json")
REBUILD_COMMAND = "pip install --no-build-isolation --no-deps --force-reinstall -e ."


def _built_against():
    try:
        with open(_BUILD_RECORD) as f:
            return json.load(f).get("torch_version", "unknown")
    except (OSError, ValueError):
        return "unknown (no build record: the library was probably never built)"


def _load():
    try:
        from torchcorr import _C  # registers the torchcorr ops with the dispatcher
    except (ImportError, OSError) as error:
        message = (
            f"torchcorr: the native library could not be loaded ({error}). "
            f"It was built against torch {_built_against()}, and torch {torch.__version__} is running. "
            f"Rebuild it from the torchcorr source folder with `{REBUILD_COMMAND}`. "
            "Until then torchcorr uses its pure-PyTorch reference, which is correct but slow."
        )
        return None, message
    return _C, None


def _native_device_types(library) -> frozenset:
    """Device types whose tensors torchcorr's own kernels run on (meta: the fake kernels)."""
    if library is None:
        return frozenset()
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    return frozenset({"meta"} | {device for device, key in (("cpu", "CPU"), ("cuda", "CUDA"))
                                 if has_kernel("torchcorr::corr2d_forward", key)})


library, load_error = _load()
if load_error is not None:
    warnings.warn(load_error, RuntimeWarning, stacklevel=2)
NATIVE_DEVICE_TYPES = _native_device_types(library)
CPU_IS_NATIVE, CUDA_IS_NATIVE = "cpu" in NATIVE_DEVICE_TYPES, "cuda" in NATIVE_DEVICE_TYPES
forward_op = torch.ops.torchcorr.corr2d_forward.default if library is not None else None  # looked up once


def check_forward(op, input, weight, bias, stride, padding, dilation, groups):
    """The forward op's argument checks (csrc/corr2d.cpp), raising as the op would but under `op`, the name of the
    public function called. Not while torch.compile traces (the op checks its arguments when the graph runs), and
    not without the native library."""
    if library is not None and not torch.compiler.is_compiling():
        library._check_forward(op, input, weight, bias, list(stride), list(padding), list(dilation), groups)


def native_available(device="cpu") -> bool:
    """True when torchcorr's own kernels run on tensors of this device ("cpu", "cuda", ...)."""
    return torch.device(device).type in NATIVE_DEVICE_TYPES


def build_info() -> dict:
    """How the native library was built: torch version, CUDA and its archs, OpenMP, SIMD level."""
    if library is None:
        return {"native": False, "error": load_error, "torch_version": _built_against()}
    return {"native": True, **library.build_info()}
