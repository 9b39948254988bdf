// Runs CUDA kernel source on the CPU: one std::thread per CUDA thread, one block at a time, a barrier for
// __syncthreads and one per warp for the tensor-core product mma.m16n8k16 (emulate_mma_16x8x16). Enough for
// kernels that use threadIdx/blockIdx, static shared memory, block barriers and that product (no warp
// shuffles, atomics or dynamic shared memory; every lane of a warp must reach each product). Used by tests/test_cuda_emulation.py to check the
// index arithmetic of the CUDA kernels on machines without a GPU; it says nothing about speed or races.
#pragma once

#include <barrier>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
// One block runs at a time, so a static local is exactly the block's shared memory.
#define __shared__ static
#define TORCHCORR_CUDA_EMULATION 1

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* block_barrier = nullptr;

inline void __syncthreads() { block_barrier->arrive_and_wait(); }

// The warps of the running block: a barrier each and the fragments their lanes hand to a product.
struct Warp {
  std::unique_ptr<std::barrier<>> barrier;
  uint32_t a[32][4], b[32][2];
};
inline std::vector<Warp> warps;

inline void start_warps(unsigned threads) {
  warps = std::vector<Warp>((threads + 31) / 32);
  for (unsigned i = 0; i < warps.size(); ++i)
    warps[i].barrier = std::make_unique<std::barrier<>>(std::min(32u, threads - 32 * i));
}

// 16-bit float bits (bfloat16 or IEEE half) to float.
template <bool kBF16>
float float_of_bits(uint16_t bits) {
  if constexpr (kBF16) {
    const uint32_t word = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &word, 4);
    return f;
  } else {
    _Float16 h;
    std::memcpy(&h, &bits, 2);
    return static_cast<float>(h);
  }
}

// d += A (16 x 16) * B (16 x 8) over the 32 lanes of the calling thread's warp, fragments laid out as in
// PTX's mma.m16n8k16.row.col: lane = 4*group + tig holds A[group + 8*(i%2)][2*tig + 8*(i/2) + {0,1}] in
// a[i], B[2*tig + 8*i + {0,1}][group] in b[i], and D[group + 8*(i/2)][2*tig + i%2] in d[i].
template <bool kBF16>
void emulate_mma_16x8x16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const unsigned thread = threadIdx.x, lane = thread % 32;
  Warp& warp = warps[thread / 32];
  std::memcpy(warp.a[lane], a, sizeof a), std::memcpy(warp.b[lane], b, sizeof b);
  warp.barrier->arrive_and_wait();
  auto A = [&](unsigned row, unsigned k) {
    const uint32_t word = warp.a[4 * (row % 8) + (k % 8) / 2][row / 8 + 2 * (k / 8)];
    return float_of_bits<kBF16>(uint16_t(word >> (16 * (k % 2))));
  };
  auto B = [&](unsigned k, unsigned col) {
    const uint32_t word = warp.b[4 * col + (k % 8) / 2][k / 8];
    return float_of_bits<kBF16>(uint16_t(word >> (16 * (k % 2))));
  };
  for (unsigned i = 0; i < 4; ++i) {
    const unsigned row = lane / 4 + 8 * (i / 2), col = 2 * (lane % 4) + i % 2;
    for (unsigned k = 0; k < 16; ++k) d[i] += A(row, k) * B(k, col);
  }
  warp.barrier->arrive_and_wait();  // every lane has read the fragments before they are overwritten
}

// kernel<<<grid, block>>>(args...): the block's threads are made once and run the blocks in order.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
  gridDim = grid, blockDim = block;
  const unsigned threads = block.x * block.y * block.z;
  std::unique_ptr<std::barrier<>> barrier = std::make_unique<std::barrier<>>(threads);
  block_barrier = barrier.get();
  start_warps(threads);
  // Between blocks: a fresh block barrier (threads that returned early dropped out of the old one).
  std::barrier next_block(threads, [&]() noexcept {
    barrier = std::make_unique<std::barrier<>>(threads);
    block_barrier = barrier.get();
    start_warps(threads);
  });
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
      for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
          for (unsigned bx = 0; bx < grid.x; ++bx) {
            blockIdx = dim3(bx, by, bz);
            kernel(args...);
            block_barrier->arrive_and_drop();  // a returned thread must not hold the others at a barrier
            next_block.arrive_and_wait();
          }
    });
  }
  for (auto& thread : pool) thread.join();
}
