// One object, three kernels: one clean, one that reaches malloc only through a device function
// that is not inlined, one that reaches printf the same way. Flags must follow the call graph.
#include <hip/hip_runtime.h>

__device__ __noinline__ int* grab_memory(unsigned long long n) { return (int*)malloc(n); }
__device__ __noinline__ void say(int v) { printf("v=%d\n", v); }
__device__ __noinline__ int twice(int v) { return 2 * v; }

extern "C" __global__ void axpy(float a, const float* x, float* y, unsigned int n) {
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i] + (float)twice(0);
}

extern "C" __global__ void grab(int* out, unsigned long long n) {
  int* p = grab_memory(n);
  out[0] = p != 0;
}

extern "C" __global__ void chatty(int* out) {
  say(out[0]);
}
