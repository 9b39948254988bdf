// torchcorr._C: the Python module that carries the ops; build_info() says how it was built.
#include <torch/extension.h>

namespace {

const char* simd_level() {
#if defined(__AVX512F__)
  return "AVX512";
#elif defined(__AVX2__)
  return "AVX2";
#elif defined(__SSE4_2__)
  return "SSE4.2";
#elif defined(__ARM_NEON)
  return "NEON";
#else
  return "none";
#endif
}

pybind11::dict build_info() {
  pybind11::dict info;
  info["torch_version"] = TORCHCORR_TORCH_VERSION;
#ifdef TORCHCORR_WITH_CUDA
  info["cuda"] = true;
  info["cuda_version"] = TORCHCORR_CUDA_VERSION;
  info["cuda_archs"] = TORCHCORR_CUDA_ARCHS;
#else
  info["cuda"] = false;
  info["cuda_version"] = pybind11::none();
  info["cuda_archs"] = "";
#endif
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["simd"] = simd_level();
  info["compiler"] = __VERSION__;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("build_info", &build_info, "How this torchcorr native library was built.");
}
