"""Installing: setup.py names what an old setuptools lacks before it fails on its own.

The metadata itself is checked by `make test-oldest`, which installs with the setuptools Python 3.11 ships.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# setup.py as pip runs it to prepare a wheel's metadata, with a setuptools that has no bdist_wheel of its own
# (before 70.1) and no `wheel` package: what a fresh Python 3.11 venv looks like under --no-build-isolation.
WITHOUT_WHEEL = """
import sys
import setuptools
sys.modules["setuptools.command.bdist_wheel"] = None
sys.modules["wheel"] = None
sys.argv = ["setup.py", "dist_info", "--output-dir", sys.argv[1]]
exec(compile(open("setup.py").read(), "setup.py", "exec"), {"__file__": "setup.py", "__name__": "__main__"})
"""


def test_missing_wheel_package_is_named_before_the_build(tmp_path):
    result = subprocess.run([sys.executable, "-c", WITHOUT_WHEEL, str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "builds wheels only with the `wheel` package" in result.stderr
    assert "pip install wheel" in result.stderr
    assert not os.listdir(tmp_path)  # nothing was written: it stopped first
