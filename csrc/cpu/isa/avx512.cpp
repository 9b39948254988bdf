// The CPU kernels for AVX-512 (csrc/cpu/cpu_kernels.cpp lists the levels).
#include "../cpu_kernels.h"

#ifdef TORCHCORR_X86_ISA_LEVELS
#define TORCHCORR_ISA avx512
#define TORCHCORR_ISA_TARGET "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"
#define TORCHCORR_VECTOR_BYTES 64
#define TORCHCORR_VECTOR_REGISTERS 32
#include "../kernels/kernel_table.h"
#endif
