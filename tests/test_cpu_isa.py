"""The CPU kernels' instruction-set levels: compiled into one library, the best one chosen at run time,
TORCHCORR_CPU_ISA to force a lower one, and the parity suite passing on every level this CPU runs."""

import os
import platform
import re
import shutil
import subprocess
import sys

import pytest

import torchcorr
from test_native import LIBRARY

TESTS = os.path.dirname(os.path.abspath(__file__))
INFO = torchcorr.build_info()
X86_LEVELS = platform.machine() == "x86_64" and "avx512" in INFO["cpu_isas_compiled"]
# What each level is compiled for (csrc/cpu/isa/*.cpp), as /proc/cpuinfo names the features.
FEATURES = {"avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"}, "avx2": {"avx2", "fma"},
            "baseline": set()}


def run_python(code, level, **kwargs):
    env = {**os.environ, "TORCHCORR_CPU_ISA": level}
    return subprocess.run([sys.executable, *code], env=env, cwd=TESTS, capture_output=True, text=True, **kwargs)


def test_every_level_is_compiled_and_the_best_supported_is_chosen():
    if platform.machine() == "x86_64":
        assert INFO["cpu_isas_compiled"] == ["avx512", "avx2", "baseline"] or not X86_LEVELS
    assert INFO["cpu_isas_compiled"][-1] == "baseline"
    assert set(INFO["cpu_isas_supported"]) <= set(INFO["cpu_isas_compiled"])
    if not os.environ.get("TORCHCORR_CPU_ISA"):
        assert INFO["cpu_isa"] == INFO["cpu_isas_supported"][0]


@pytest.mark.skipif(not (X86_LEVELS and os.path.exists("/proc/cpuinfo")), reason="x86-64 Linux with every level")
def test_supported_levels_are_what_the_cpu_reports():
    with open("/proc/cpuinfo") as f:
        flags = set(re.search(r"^flags\s*:(.*)$", f.read(), re.M).group(1).split())
    assert INFO["cpu_isas_supported"] == [level for level in INFO["cpu_isas_compiled"] if FEATURES[level] <= flags]


@pytest.mark.skipif(not (X86_LEVELS and LIBRARY and shutil.which("objdump")), reason="x86-64 build and objdump")
def test_only_the_levels_own_code_uses_avx():
    """Code outside the avx2/avx512 namespaces (the ops, ATen and std:: code) must run on any x86-64 CPU."""
    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", LIBRARY], capture_output=True, text=True,
                             check=True).stdout
    function, avx_functions, offenders = None, set(), set()
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
            continue
        fields = line.split("\t")
        # VEX/EVEX-encoded instructions (AVX and later) are the ones whose mnemonics start with v
        if function and len(fields) > 1 and fields[1].startswith("v"):
            avx_functions.add(function)
            if not re.search(r"torchcorr::cpu::(avx2|avx512)::", function):
                offenders.add(function)
    assert any("torchcorr::cpu::avx512::" in f for f in avx_functions)  # the listing is real
    assert not offenders, sorted(offenders)[:10]


PARITY_SUITE = ["test_cpu_kernels.py", "test_functional.py", "test_errors.py",
                "test_gradients.py::test_gradcheck_and_gradgradcheck"]


@pytest.mark.parametrize("level", [level for level in INFO["cpu_isas_supported"] if level != INFO["cpu_isa"]])
def test_parity_suite_on_each_level(level):
    """Each level the CPU runs, forced in a subprocess, passes the parity, determinism and error tests."""
    chosen = run_python(["-c", "import torchcorr; print(torchcorr.build_info()['cpu_isa'])"], level, timeout=120)
    assert chosen.stdout.strip() == level, chosen.stderr
    result = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", *PARITY_SUITE], level, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\d+ passed", result.stdout) and "failed" not in result.stdout.splitlines()[-1]


def test_level_names_ignore_case():
    chosen = run_python(["-c", "import torchcorr; print(torchcorr.build_info()['cpu_isa'])"], "BaseLine", timeout=120)
    assert chosen.stdout.strip() == "baseline", chosen.stderr


@pytest.mark.parametrize("level", ["avx1024", "sse2"])
def test_unknown_level_is_a_clear_error(level):
    code = """
import torch, torchcorr
info = torchcorr.build_info()
assert info["cpu_isa"] is None and "not a level compiled into torchcorr" in info["cpu_isa_error"], info
try:
    torchcorr.corr2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 2, 2))
except RuntimeError as error:
    print(error)
"""
    result = run_python(["-c", code], level, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"TORCHCORR_CPU_ISA={level} is not a level compiled into torchcorr" in result.stdout
    assert "baseline" in result.stdout  # it names the levels to choose from
