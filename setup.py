"""Builds torchcorr._C, the native ops, against the installed torch.

    pip install --no-build-isolation -e .

Environment:
  TORCHCORR_CUDA=auto|0|1   CUDA kernels: auto (default) builds them when torch has CUDA, nvcc is
                            found and csrc/cuda/ has sources; 0 never; 1 always, failing clearly
                            when impossible.
  TORCH_CUDA_ARCH_LIST      GPU architectures; defaults to the visible GPU, else "8.0;9.0".
  CUDA_HOME                 CUDA toolkit; defaults to the one that holds the nvcc on PATH.
"""

import glob
import importlib.util
import json
import os
import shutil
import sys

import setuptools
from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def check_wheel_support():
    """Building a wheel (what pip install does, editable too) needs `wheel` with setuptools before 70.1.

    With --no-build-isolation pip does not install it, and setuptools then fails late with "invalid command
    'bdist_wheel'": say what is missing before anything else happens.
    """
    if not {"dist_info", "bdist_wheel", "editable_wheel"} & set(sys.argv[1:]):
        return
    if importlib.util.find_spec("setuptools.command.bdist_wheel") is not None:
        return
    try:
        import wheel  # noqa: F401
    except ImportError:
        raise SystemExit(f"torchcorr: setuptools {setuptools.__version__} builds wheels only with the `wheel` "
                         "package, which this environment lacks. Run `pip install wheel` (or upgrade to "
                         "setuptools 70.1 or newer), then install torchcorr again.") from None


check_wheel_support()


def locate_cuda_home():
    """The toolkit of the nvcc on PATH, else /usr/local/cuda: a folder holding the CUDA headers.

    torch guesses /usr/local when nvcc is a wrapper script in /usr/local/bin, and then fails to link.
    """
    nvcc = shutil.which("nvcc")
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    for home in candidates + ["/usr/local/cuda"]:
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return None


if not os.environ.get("CUDA_HOME") and locate_cuda_home():
    os.environ["CUDA_HOME"] = locate_cuda_home()

import torch  # noqa: E402  (CUDA_HOME must be set before cpp_extension reads it)
from torch.utils import cpp_extension  # noqa: E402


# The CPU kernels are compiled once per instruction-set level (csrc/cpu/isa/) and chosen at run time, so the
# library runs on any CPU of its architecture. Everything else is compiled for the compiler's default target,
# and linked first: where a library function (std::, ATen) is emitted by several objects, the linker keeps
# the first, which must be one every CPU runs.
CPU_SOURCES = (sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp") + glob.glob("csrc/autocast/*.cpp")
                      + glob.glob("csrc/autograd/*.cpp"))
               + ["csrc/cpu/isa/baseline.cpp", "csrc/cpu/isa/avx2.cpp", "csrc/cpu/isa/avx512.cpp"])
CUDA_SOURCES = sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))


def cuda_wanted():
    choice = os.environ.get("TORCHCORR_CUDA", "auto")
    if choice not in ("auto", "0", "1"):
        raise SystemExit(f"TORCHCORR_CUDA must be auto, 0 or 1, not {choice!r}")
    nvcc = cpp_extension.CUDA_HOME and os.path.exists(os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"))
    problems = [] if CUDA_SOURCES else ["this source tree has no CUDA kernels (csrc/cuda/)"]
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is a CPU-only build")
    if not nvcc:
        problems.append("nvcc was not found (put it on PATH or set CUDA_HOME)")
    if choice == "1" and problems:
        raise SystemExit("TORCHCORR_CUDA=1 asks for the CUDA kernels, but " + " and ".join(problems))
    return choice != "0" and not problems


def cuda_arch_list():
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    return os.environ.get("TORCH_CUDA_ARCH_LIST", "detected")


def write_build_record(with_cuda, archs):
    """What the library is built against, readable even when the library itself will not load."""
    record = {"torch_version": torch.__version__, "cuda": with_cuda, "cuda_archs": archs if with_cuda else ""}
    with open(os.path.join(ROOT, "torchcorr", "_build.json"), "w") as f:
        json.dump(record, f, indent=1)


def extension():
    with_cuda = cuda_wanted()
    archs = cuda_arch_list() if with_cuda else ""
    write_build_record(with_cuda, archs)
    sources = CPU_SOURCES
    cxx = ["-O3", "-fopenmp"]
    defines = [("TORCHCORR_TORCH_VERSION", f'"{torch.__version__}"')]
    if not with_cuda:
        return cpp_extension.CppExtension(
            "torchcorr._C", sources, define_macros=defines,
            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    sources += CUDA_SOURCES
    defines += [("TORCHCORR_WITH_CUDA", None),
                ("TORCHCORR_CUDA_VERSION", f'"{torch.version.cuda}"'),
                ("TORCHCORR_CUDA_ARCHS", f'"{archs}"')]
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    return cpp_extension.CUDAExtension(
        "torchcorr._C", sources, define_macros=defines,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=["-fopenmp"])


setup(
    license="BSD-3-Clause",
    packages=find_packages(include=["torchcorr", "torchcorr.*"]),
    package_data={"torchcorr": ["_build.json"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
