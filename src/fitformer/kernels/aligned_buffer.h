// A 64-byte aligned, uninitialised buffer of n elements of T (at least one cache line),
// freed on scope exit: the per-thread scratch of the HP CPU kernels (hp_linear.cpp's tile
// transposes, hp_linear_int8.cpp's packed int8 inputs). 64 bytes: one AVX-512 vector and one
// x86 cache line, so aligned vector loads never split a line.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>

template <typename T>
class AlignedBuffer {
 public:
  explicit AlignedBuffer(int64_t n)
      : p_(static_cast<T*>(std::aligned_alloc(
            64, std::max<int64_t>(64, (n * static_cast<int64_t>(sizeof(T)) + 63) / 64 * 64)))) {
    if (!p_) throw std::bad_alloc();
  }
  ~AlignedBuffer() { std::free(p_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  T* get() const { return p_; }

 private:
  T* p_;
};
