#include "output_blocks.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <map>
#include <mutex>

#if defined(__linux__) || defined(__APPLE__)
#include <sys/mman.h>
#define TORCHCORR_MAPPED_BLOCKS 1
#endif

namespace torchcorr::cpu {
namespace {

std::atomic<bool> cache_switch{true};

#ifdef TORCHCORR_MAPPED_BLOCKS

constexpr std::size_t kHugePage = std::size_t{2} << 20;

struct Block {
  void* data;
  std::size_t bytes;
};

// Free blocks by size. Never destroyed: tensors freed during interpreter exit still return their blocks here.
class BlockCache {
 public:
  Block take(std::size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto found = free_.find(bytes);
      if (found != free_.end()) {
        Block block{found->second, bytes};
        free_.erase(found);
        cached_ -= bytes;
        return block;
      }
    }
    void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK_WITH(OutOfMemoryError, data != MAP_FAILED, "torchcorr: could not allocate ", bytes,
                     " bytes for an output");
#ifdef MADV_HUGEPAGE
    madvise(data, bytes, MADV_HUGEPAGE);  // advice only: refused where huge pages are off
#endif
    return {data, bytes};
  }

  // Caches a freed block, unmapping the smallest free blocks to make room.
  void give(Block block) {
    std::multimap<std::size_t, void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cache_switch.load(std::memory_order_relaxed) && block.bytes <= kMaxCachedBytes) {
        while (cached_ + block.bytes > kMaxCachedBytes) {
          cached_ -= free_.begin()->first;
          evicted.insert(free_.extract(free_.begin()));
        }
        free_.emplace(block.bytes, block.data);
        cached_ += block.bytes;
        block.data = nullptr;
      }
    }
    for (const auto& [bytes, data] : evicted) munmap(data, bytes);
    if (block.data != nullptr) munmap(block.data, block.bytes);
  }

  std::size_t cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

  void release() {
    std::multimap<std::size_t, void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      cached_ = 0;
    }
    for (const auto& [bytes, data] : blocks) munmap(data, bytes);
  }

 private:
  std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;
  std::size_t cached_ = 0;
};

BlockCache& block_cache() {
  static auto* cache = new BlockCache();
  return *cache;
}

void return_block(void* context) {
  auto* block = static_cast<Block*>(context);
  block_cache().give(*block);
  delete block;
}

// torch's CPU allocator below kLargeOutputBytes (or with the cache off), whole huge pages of a cached block above.
// Storages keep it, so a resized output reallocates through it too.
class OutputAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(std::size_t n) override {
    if (n < kLargeOutputBytes || !cache_switch.load(std::memory_order_relaxed))
      return c10::GetCPUAllocator()->allocate(n);
    auto* block = new Block(block_cache().take((n + kHugePage - 1) / kHugePage * kHugePage));
    return {block->data, block, &return_block, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
};

c10::Allocator* output_allocator() {
  static OutputAllocator allocator;
  return &allocator;
}

#else  // no mmap: every output from torch's allocator

c10::Allocator* output_allocator() { return c10::GetCPUAllocator(); }

#endif

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, at::ScalarType dtype, at::MemoryFormat format) {
  return at::detail::empty_generic(sizes, output_allocator(), c10::DispatchKeySet(c10::DispatchKey::CPU), dtype,
                                   format);
}

bool output_cache_enabled() { return cache_switch.load(std::memory_order_relaxed); }

void set_output_cache_enabled(bool enabled) {
  cache_switch.store(enabled, std::memory_order_relaxed);
  if (!enabled) empty_output_cache();
}

#ifdef TORCHCORR_MAPPED_BLOCKS
std::size_t output_cache_bytes() { return block_cache().cached(); }
void empty_output_cache() { block_cache().release(); }
#else
std::size_t output_cache_bytes() { return 0; }
void empty_output_cache() {}
#endif

}  // namespace torchcorr::cpu
