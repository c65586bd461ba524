// Launch bounds, a C++ (mangled) kernel name, a large static shared array, constant memory, assert.
#include <hip/hip_runtime.h>
#include <assert.h>

__constant__ float coeffs[8];  // read-only on the device: allowed

extern "C" __global__ __launch_bounds__(128) void bounded(float* out) { out[threadIdx.x] = coeffs[threadIdx.x & 7]; }

extern "C" __global__ void big_shared(int* out) {
  __shared__ int x[12000];  // 48000 bytes
  x[threadIdx.x] = out[0];
  __syncthreads();
  out[1] = x[threadIdx.x ^ 1];
}

__global__ void mangled(int* out, float f) { out[0] = (int)f; }

extern "C" __global__ void asserting(int* out) { assert(out[0] == 0); }
