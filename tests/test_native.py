"""The native library: how it was built, what it links to, the fallback, and 64-bit indexing."""

import glob
import os
import shutil
import subprocess
import sys

import pytest
import torch

import torchcorr

PACKAGE = os.path.dirname(torchcorr.__file__)
LIBRARY = (glob.glob(os.path.join(PACKAGE, "_C*.so")) or [None])[0]


def test_build_info_describes_the_build():
    info = torchcorr.build_info()
    assert info["native"] is True
    assert info["torch_version"] == torch.__version__
    assert info["openmp"] is True
    assert info["cpu_isa"] in info["cpu_isas_supported"]
    assert info["cpu_isas_compiled"][-1] == "baseline" and "baseline" in info["cpu_isas_supported"]
    assert info["cuda"] == bool(info["cuda_archs"])
    if info["cuda"]:
        assert torch.version.cuda is not None


def test_native_available():
    assert torchcorr.native_available("cpu")
    assert torchcorr.native_available(torch.device("meta"))
    assert not torchcorr.native_available("mps")
    # the dispatcher's registrations agree with what the library says it was compiled with
    assert torchcorr.native_available("cuda") == torchcorr.build_info()["cuda"]


@pytest.mark.skipif(LIBRARY is None or shutil.which("nm") is None, reason="needs the built library and nm")
def test_library_calls_no_torch_convolution():
    undefined = subprocess.run(["nm", "-D", "-C", "--undefined-only", LIBRARY], capture_output=True, text=True,
                               check=True).stdout.lower()
    assert "corr2d" not in undefined  # the listing is real: our own symbols are defined, not imported
    for word in ("convolution", "conv2d", "mkldnn", "onednn", "cudnn", "im2col", "unfold", "gemm", "cublas",
                 "matmul", "::mm(", "::bmm(", "addmm"):
        assert word not in undefined, word


@pytest.mark.skipif(LIBRARY is None or shutil.which("readelf") is None, reason="needs the built library and readelf")
def test_library_links_no_cudnn_or_cublas():
    dynamic = subprocess.run(["readelf", "-d", LIBRARY], capture_output=True, text=True, check=True).stdout.lower()
    needed = [line for line in dynamic.splitlines() if "(needed)" in line]
    assert any("libc10.so" in line for line in needed)  # the listing is real
    for word in ("cudnn", "cublas", "cusparse", "cufft", "mkldnn", "dnnl"):
        assert not any(word in line for line in needed), word


FALLBACK_SCRIPT = """
import sys, warnings
sys.modules["torchcorr._C"] = None  # what an ABI mismatch looks like: the import fails
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import torch, torchcorr
    y = torchcorr.corr2d(torch.tensor([[0., 1, 2], [3, 4, 5], [6, 7, 8]]), torch.tensor([[0., 1], [2, 3]]))
    torchcorr.corr2d(torch.ones(4, 4), torch.ones(2, 2))
print(y.tolist())
print(torchcorr.native_available(), torchcorr.build_info()["native"])
print(len(caught))
print(caught[0].message)
"""


def test_fallback_explains_itself_once_and_still_computes():
    result = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], capture_output=True, text=True, check=True)
    values, availability, count, message = result.stdout.strip().split("\n", 3)
    assert values == "[[19.0, 25.0], [37.0, 43.0]]"
    assert availability == "False False"
    assert count == "1"
    assert f"built against torch {torch.__version__}" in message
    assert f"torch {torch.__version__} is running" in message
    assert "pip install --no-build-isolation" in message


def available_memory_gib():
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/meminfo") or available_memory_gib() < 12,
                    reason="needs 12 GiB of free memory")
def test_image_of_more_than_2_31_pixels():
    """46341^2 > 2^31 pixels: every offset past 2^31 must be computed in 64 bits.

    A 1x1 kernel with stride 46340 reads only the four corners, so the sums are easy to check while
    the offsets span the whole image; the corners hold random values.
    """
    side, stride = 46341, 46340
    image = torch.zeros(1, 1, side, side)
    corners = torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
    image[0, 0, ::stride, ::stride] = corners
    weight = torch.full((1, 1, 1, 1), 2.0)
    config = ([stride, stride], [0, 0], [1, 1], 1)
    y = torchcorr.corr2d(image, weight, stride=stride)
    assert torch.equal(y[0, 0], 2 * corners)
    grad_output = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gw = torch.ops.torchcorr.corr2d_weight_grad(grad_output, image, [1, 1], *config)
    assert torch.allclose(gw.flatten(), (corners * grad_output[0, 0]).sum().reshape(1))
    del image  # one 8.6 GB image at a time
    gx = torch.ops.torchcorr.corr2d_input_grad(grad_output, weight, [side, side], *config)
    assert gx[0, 0, -1, -1].item() == 2 * 4.0 and gx[0, 0, stride, 0].item() == 2 * 3.0
    gx[0, 0, ::stride, ::stride] = 0
    assert gx.count_nonzero().item() == 0
