"""The CUDA implicit-GEMM and tile kernels (csrc/cuda/implicit_gemm.cuh, implicit_gemm_mma.cuh with an emulated
tensor-core product, direct_tile.cuh) run on the CPU, one thread per CUDA thread (tests/cuda_emulation/emulate.h),
against a float64 loop nest: their index arithmetic, fragment layouts, tiling, chunking and padding are checked
on every machine, GPU or not. tests/test_cuda.py checks the real kernels on a GPU.
"""

import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "cuda_emulation", "kernels_check.cpp")


def test_cuda_kernels_match_a_float64_loop_nest(tmp_path):
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the emulation")
    binary = tmp_path / "kernels_check"
    build = subprocess.run([compiler, "-std=c++20", "-O1", "-pthread", SOURCE, "-o", str(binary)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(binary), "6"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "CUDA kernel emulation: 0 failures" in run.stdout
