// Kernels that fault on purpose, for the device tests (loaded directly, not through registration).
#include <hip/hip_runtime.h>

// p[index] = value: with an index far past the pool this is an illegal address.
extern "C" __global__ void oob_write(long long* p, unsigned long long index, long long value) {
  p[index] = value;
}

// __trap(): an illegal instruction / launch failure.
extern "C" __global__ void trap_now(int* unused) { __trap(); }

// fill the first n bytes at p with v (a clean kernel to show the device works after a reset).
extern "C" __global__ void fill_u8(unsigned char* p, unsigned long long n, unsigned char v) {
  unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = v;
}

// dst[i] = src[i] for n bytes (shows what a buffer holds before anything wrote it).
extern "C" __global__ void copy_u8(unsigned char* dst, const unsigned char* src, unsigned long long n) {
  unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = src[i];
}
