// torchcorr._C: the Python module that carries the ops; build_info() says how it was built, _check_forward runs
// the forward op's argument checks for the Python layer, and the _cpu_* functions are torchcorr.backends.cpu.
#include "cpu/algorithm.h"
#include "cpu/cpu_kernels.h"
#include "cpu/output_blocks.h"

#include <torch/extension.h>

namespace {

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
  // CPU kernel levels (csrc/cpu/cpu_kernels.cpp): compiled in, supported by this CPU, and the one in use.
  info["cpu_isas_compiled"] = torchcorr::cpu::compiled_cpu_isas();
  info["cpu_isas_supported"] = torchcorr::cpu::supported_cpu_isas();
  try {
    info["cpu_isa"] = torchcorr::cpu::cpu_kernels().isa;
  } catch (const c10::Error& error) {  // TORCHCORR_CPU_ISA names no usable level: the ops raise the same
    info["cpu_isa"] = pybind11::none();
    info["cpu_isa_error"] = error.what_without_backtrace();
  }
  info["compiler"] = __VERSION__;
  return info;
}

// The forward op's argument checks under the name of the public function that was called (torchcorr/_args.py):
// its errors as the Python exceptions the op raises (ValueError, TypeError, RuntimeError), without C++ frames.
void check_forward_arguments(const std::string& op, const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, const std::vector<int64_t>& stride,
                             const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation,
                             int64_t groups) {
  try {
    torchcorr::check_forward(op.c_str(), input, weight, bias, stride, padding, dilation, groups);
  } catch (const c10::ValueError& error) {
    throw pybind11::value_error(error.what_without_backtrace());
  } catch (const c10::TypeError& error) {
    throw pybind11::type_error(error.what_without_backtrace());
  } catch (const c10::Error& error) {
    throw std::runtime_error(error.what_without_backtrace());
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("_check_forward", &check_forward_arguments, "The forward op's argument checks, under a given name.");
  m.def("build_info", &build_info, "How this torchcorr native library was built.");
  m.def("_cpu_gemm_enabled", &torchcorr::cpu::gemm_enabled, "Whether 1x1 CPU layers run as matrix products.");
  m.def("_set_cpu_gemm_enabled", &torchcorr::cpu::set_gemm_enabled, "Turn the CPU gemm family on or off.");
  m.def("_set_cpu_gemm_everywhere", &torchcorr::cpu::set_gemm_everywhere,
        "Run every op of dense layers through the GEMM, whatever the dispatcher would choose (tests).");
  m.def("_cpu_winograd_enabled", &torchcorr::cpu::winograd_enabled, "Whether 3x3 CPU layers may run as Winograd.");
  m.def("_set_cpu_winograd_enabled", &torchcorr::cpu::set_winograd_enabled,
        "Turn the CPU Winograd family on or off.");
  m.def("_cpu_output_cache_enabled", &torchcorr::cpu::output_cache_enabled,
        "Whether large CPU outputs come from cached blocks.");
  m.def("_set_cpu_output_cache_enabled", &torchcorr::cpu::set_output_cache_enabled,
        "Turn the cache of large CPU outputs on or off (off also frees its blocks).");
  m.def("_cpu_output_cache_bytes", &torchcorr::cpu::output_cache_bytes, "Bytes of free blocks the cache holds.");
  m.def("_cpu_empty_output_cache", &torchcorr::cpu::empty_output_cache, "Return the cache's free blocks.");
}
