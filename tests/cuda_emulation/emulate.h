// Runs CUDA kernel source on the CPU: one std::thread per CUDA thread, one block at a time, a barrier for
// __syncthreads. Enough for kernels that use threadIdx/blockIdx, static shared memory and block barriers
// (no warp shuffles, atomics or dynamic shared memory). Used by tests/test_cuda_emulation.py to check the
// index arithmetic of the CUDA kernels on machines without a GPU; it says nothing about speed or races.
#pragma once

#include <barrier>
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

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* block_barrier = nullptr;

inline void __syncthreads() { block_barrier->arrive_and_wait(); }

// kernel<<<grid, block>>>(args...): the block's threads are made once and run the blocks in order.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
  gridDim = grid, blockDim = block;
  const unsigned threads = block.x * block.y * block.z;
  std::unique_ptr<std::barrier<>> barrier = std::make_unique<std::barrier<>>(threads);
  block_barrier = barrier.get();
  // Between blocks: a fresh block barrier (threads that returned early dropped out of the old one).
  std::barrier next_block(threads, [&]() noexcept {
    barrier = std::make_unique<std::barrier<>>(threads);
    block_barrier = barrier.get();
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
