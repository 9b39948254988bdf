"""A wheel: built from a copy of the sources (CPU kernels), installed into a fresh virtual environment that
sees the pinned torch, where the D2L tour and a gradient check run against the installed package."""

import glob
import os
import shutil
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["setup.py", "pyproject.toml", "README.md", "csrc", "torchcorr"]

GRADCHECK = """
import torch, torchcorr
assert torchcorr.__file__.startswith(r"{venv}"), torchcorr.__file__
info = torchcorr.build_info()
assert info["native"] and info["cpu_isa"] in info["cpu_isas_supported"], info
x = torch.randn(2, 4, 7, 6, dtype=torch.float64, requires_grad=True)
w = torch.randn(6, 2, 3, 2, dtype=torch.float64, requires_grad=True)
b = torch.randn(6, dtype=torch.float64, requires_grad=True)
assert torch.autograd.gradcheck(lambda x, w, b: torchcorr.corr2d(x, w, b, stride=(2, 1), padding=1, groups=2),
                                (x, w, b))
print("gradcheck passed on", info["cpu_isa"])
"""


def test_wheel_installs_and_runs_in_a_fresh_environment(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, name)) else shutil.copy
        copy(os.path.join(ROOT, name), source / name)
    for built in glob.glob(str(source / "torchcorr" / "_C*.so")) + glob.glob(str(source / "torchcorr" / "_build.json")):
        os.remove(built)
    env = {**os.environ, "TORCHCORR_CUDA": "0", "MAX_JOBS": str(os.cpu_count())}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps",
                    "-w", str(tmp_path / "dist"), str(source)], env=env, check=True, capture_output=True, timeout=1200)
    (wheel,) = glob.glob(str(tmp_path / "dist" / "torchcorr-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "pinned_torch.pth"), "w") as f:  # the pinned torch, and nothing else of ours
        f.write(os.path.dirname(os.path.dirname(torch.__file__)) + "\n")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel], check=True,
                   capture_output=True, timeout=300)

    run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=300)
    tour = subprocess.run([python, os.path.join(ROOT, "examples", "d2l_tour.py")], **run)
    assert tour.returncode == 0, tour.stdout[-2000:] + tour.stderr[-2000:]
    check = subprocess.run([python, "-c", GRADCHECK.format(venv=venv)], **run)
    assert check.returncode == 0, check.stderr[-2000:]
    assert "gradcheck passed" in check.stdout
