// __device__ variables keep their values between invocations of a cached module: refused by default.
#include <hip/hip_runtime.h>

__device__ int counter;
__device__ float table[4] = {1, 2, 3, 4};

extern "C" __global__ void bump(int* out) {
  counter++;
  out[0] = counter + (int)table[1];
}
