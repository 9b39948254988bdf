// Where the CPU kernels' outputs come from: large ones from a cache of mapped blocks.
//
// glibc serves every allocation above its largest mmap threshold (32 MiB) with fresh pages from the kernel,
// which page-faults them in on first write: on the VMs of the benchmarks a 38.5 MB output (8 x 96 x 112 x 112
// float32, mobilenet_v2's and efficientnet_b0's widest activations) took 10 ms to fault in, against 0.25 ms to
// write once mapped, and a training loop pays that on every step. Outputs from kLargeOutputBytes on take a block
// from a cache instead; a freed block goes back to it (up to kMaxCachedBytes of free blocks), as torch's CUDA
// caching allocator does on GPUs. Fresh blocks are mapped with transparent huge pages advised (where the kernel
// allows them: a fault per 2 MiB, not per 4 KiB). Smaller outputs come from torch's CPU allocator, as before.
//
// torchcorr.backends.cpu.cache_large_outputs = False turns the cache off (outputs from torch's allocator);
// torchcorr.backends.cpu.empty_cache() returns the free blocks to the system.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>

namespace torchcorr::cpu {

constexpr std::size_t kLargeOutputBytes = std::size_t{32} << 20;
constexpr std::size_t kMaxCachedBytes = std::size_t{1} << 30;

// An uninitialised CPU tensor (as at::empty), large ones from the cache.
at::Tensor empty_output(at::IntArrayRef sizes, at::ScalarType dtype, at::MemoryFormat format);

bool output_cache_enabled();
void set_output_cache_enabled(bool enabled);
// Free blocks held, in bytes; empty_output_cache unmaps them (blocks in use return to the cache when freed).
std::size_t output_cache_bytes();
void empty_output_cache();

}  // namespace torchcorr::cpu
