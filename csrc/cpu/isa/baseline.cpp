// The CPU kernels for the compiler's default target, which every CPU of the architecture runs (SSE2 on
// x86-64, NEON on aarch64); csrc/cpu/cpu_kernels.cpp lists the levels.
#define TORCHCORR_ISA baseline
#define TORCHCORR_VECTOR_BYTES 16
#if defined(__aarch64__)
#define TORCHCORR_VECTOR_REGISTERS 32
#else
#define TORCHCORR_VECTOR_REGISTERS 16
#endif
#include "../kernels/kernel_table.h"
