// A clean kernel next to one that calls malloc, in one code object.
#include <hip/hip_runtime.h>

extern "C" __global__ void axpy(float* y, const float* x, float a, unsigned long long n) {
  unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += a * x[i];
}

extern "C" __global__ void grab(int* out, unsigned long long n) {
  int* p = (int*)malloc(n);
  out[0] = p != nullptr;
  free(p);
}
