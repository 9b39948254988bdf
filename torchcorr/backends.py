"""Switches for torchcorr's CPU algorithm families, in the spirit of torch.backends.cudnn.

    torchcorr.backends.cpu.gemm = False     # no GEMM: every layer through the direct kernels
    with torchcorr.backends.cpu.flags(gemm=False): ...
    with torchcorr.backends.cpu.flags(gemm_everywhere=True): ...   # the GEMM wherever it can run (tests)
    torchcorr.backends.cpu.winograd = False  # stride-1 3x3 layers through the direct kernels
    torchcorr.backends.cpu.cache_large_outputs = False  # outputs above 32 MiB from torch's allocator
    torchcorr.backends.cpu.empty_cache()     # return the cached free blocks of large outputs

Which family runs for which problem is decided in one place, csrc/cpu/algorithm.h.
"""

import contextlib

from . import _native


def _library():
    if _native.library is None:
        raise RuntimeError("torchcorr's native library is not loaded: there is no CPU algorithm to switch")
    return _native.library


class _CpuBackend:
    _everywhere = False

    @property
    def gemm(self) -> bool:
        """Dense layers as cache-blocked matrix products where that measured faster (default True)."""
        return _native.library is not None and _native.library._cpu_gemm_enabled()

    @gemm.setter
    def gemm(self, enabled: bool):
        _library()._set_cpu_gemm_enabled(bool(enabled))

    @property
    def gemm_everywhere(self) -> bool:
        """Every op of every dense layer through the GEMM, also where the direct kernels are faster: to test
        and to compare the two families (default False)."""
        return self._everywhere

    @gemm_everywhere.setter
    def gemm_everywhere(self, everywhere: bool):
        _library()._set_cpu_gemm_everywhere(bool(everywhere))
        self._everywhere = bool(everywhere)

    @property
    def winograd(self) -> bool:
        """Stride-1 3x3 layers in float32 (float16, bfloat16) by Winograd's minimal filtering, F(4x4, 3x3) or
        F(2x2, 3x3), for the forward pass and the input gradient (default True). Its float32 rounding error is
        a few times the direct kernels' (README, Numerics); False sends those layers to the direct kernels."""
        return _native.library is not None and _native.library._cpu_winograd_enabled()

    @winograd.setter
    def winograd(self, enabled: bool):
        _library()._set_cpu_winograd_enabled(bool(enabled))

    @property
    def cache_large_outputs(self) -> bool:
        """Outputs of 32 MiB and more from a cache of mapped blocks, reused from call to call, instead of fresh
        pages that the system faults in on every call (10 ms per 38.5 MB on the benchmark machines); at most
        1 GiB of free blocks is kept (default True). False frees the cached blocks and allocates as torch does."""
        return _native.library is not None and _native.library._cpu_output_cache_enabled()

    @cache_large_outputs.setter
    def cache_large_outputs(self, enabled: bool):
        _library()._set_cpu_output_cache_enabled(bool(enabled))

    def cached_bytes(self) -> int:
        """Bytes of free blocks the cache of large outputs holds."""
        return _native.library._cpu_output_cache_bytes() if _native.library is not None else 0

    def empty_cache(self):
        """Return the free blocks of the cache of large outputs to the system (as torch.cuda.empty_cache)."""
        if _native.library is not None:
            _native.library._cpu_empty_output_cache()

    @contextlib.contextmanager
    def flags(self, gemm: bool = True, gemm_everywhere: bool = False, winograd: bool = True):
        previous = self.gemm, self.gemm_everywhere, self.winograd
        self.gemm, self.gemm_everywhere, self.winograd = gemm, gemm_everywhere, winograd
        try:
            yield
        finally:
            self.gemm, self.gemm_everywhere, self.winograd = previous


cpu = _CpuBackend()
