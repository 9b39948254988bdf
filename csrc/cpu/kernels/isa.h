// What makes the headers in this folder compile once per instruction-set level (see cpu_kernels.h).
//
// Each csrc/cpu/isa/<level>.cpp defines TORCHCORR_ISA (the level's namespace), TORCHCORR_VECTOR_BYTES,
// TORCHCORR_VECTOR_REGISTERS and, above the baseline, TORCHCORR_ISA_TARGET (GCC target features), then
// includes kernel_table.h. Every kernel header includes what it needs first and then puts its own code
// between TORCHCORR_ISA_BEGIN and TORCHCORR_ISA_END: inside, functions are compiled for the level and
// live in namespace torchcorr::cpu::<level>. Library code (std::, ATen) stays outside, compiled for the
// baseline, so the linker can never pick a copy that the running CPU lacks the instructions for.
#pragma once

#ifndef TORCHCORR_ISA
#error "the kernel headers are compiled through csrc/cpu/isa/<level>.cpp"
#endif

#define TORCHCORR_STRINGIFY_(x) #x
#define TORCHCORR_STRINGIFY(x) TORCHCORR_STRINGIFY_(x)

#ifdef TORCHCORR_ISA_TARGET
#define TORCHCORR_ISA_BEGIN                                                 \
  _Pragma("GCC push_options")                                               \
  _Pragma(TORCHCORR_STRINGIFY(GCC target(TORCHCORR_ISA_TARGET)))             \
  namespace torchcorr::cpu::TORCHCORR_ISA {
#define TORCHCORR_ISA_END \
  }                       \
  _Pragma("GCC pop_options")
#else
#define TORCHCORR_ISA_BEGIN namespace torchcorr::cpu::TORCHCORR_ISA {
#define TORCHCORR_ISA_END }
#endif
