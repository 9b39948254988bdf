// The CPU kernels for AVX2 with FMA (csrc/cpu/cpu_kernels.cpp lists the levels).
#include "../cpu_kernels.h"

#ifdef TORCHCORR_X86_ISA_LEVELS
#define TORCHCORR_ISA avx2
#define TORCHCORR_ISA_TARGET "avx2,fma"
#define TORCHCORR_VECTOR_BYTES 32
#define TORCHCORR_VECTOR_REGISTERS 16
#include "../kernels/kernel_table.h"
#endif
