// The kernel table of one instruction-set level: included once, by csrc/cpu/isa/<level>.cpp, after it has
// defined the level (kernels/isa.h). Only data is defined here, outside the level's target region.
#include "../cpu_kernels.h"
#include "direct_correlation.h"
#include "gemm.h"
#include "weight_grad.h"
#include "winograd.h"

#define TORCHCORR_CONCAT_(a, b) a##b
#define TORCHCORR_CONCAT(a, b) TORCHCORR_CONCAT_(a, b)

namespace torchcorr::cpu {

extern const CpuKernels TORCHCORR_CONCAT(TORCHCORR_ISA, _kernels);
const CpuKernels TORCHCORR_CONCAT(TORCHCORR_ISA, _kernels){
    TORCHCORR_STRINGIFY(TORCHCORR_ISA),
    {&TORCHCORR_ISA::direct_correlation<float>, &TORCHCORR_ISA::input_grad_phases<float>,
     &TORCHCORR_ISA::weight_grad_kernel<float>,
     &TORCHCORR_ISA::gemm<float>, &TORCHCORR_ISA::winograd_correlation<float>,
     &TORCHCORR_ISA::winograd_weight_grad<float>},
    {&TORCHCORR_ISA::direct_correlation<double>, &TORCHCORR_ISA::input_grad_phases<double>,
     &TORCHCORR_ISA::weight_grad_kernel<double>,
     &TORCHCORR_ISA::gemm<double>, &TORCHCORR_ISA::winograd_correlation<double>,
     &TORCHCORR_ISA::winograd_weight_grad<double>},
};

}  // namespace torchcorr::cpu
