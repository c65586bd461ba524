// Every device-side HIP name the shim maps, in one kernel.
#include <hip/hip_runtime.h>

extern "C" __global__ void shim_all(unsigned long long* out, float* f) {
  HIP_DYNAMIC_SHARED(float, dyn)
  unsigned int t = hipThreadIdx_x + hipThreadIdx_y + hipThreadIdx_z;
  unsigned int b = hipBlockIdx_x + hipBlockIdx_y + hipBlockIdx_z;
  unsigned int d = hipBlockDim_x * hipBlockDim_y * hipBlockDim_z + hipGridDim_x + hipGridDim_y + hipGridDim_z;
  dyn[t] = f[t];
  __syncthreads();
  float v = __shfl_down(dyn[t], 1) + __shfl_up(dyn[t], 1) + __shfl_xor(dyn[t], 1) + __shfl(dyn[t], 0);
  unsigned long long votes = __ballot(v > 0.0f);
  int any = __any(v > 1.0f), all = __all(v > 2.0f);
  unsafeAtomicAdd(&f[0], v);
  atomicAdd(&out[0], (unsigned long long)(t + b + d + any + all + __lane_id()) + votes);
}
