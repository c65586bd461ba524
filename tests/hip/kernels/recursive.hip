// Recursion gives the kernel a dynamic stack (.uses_dynamic_stack): pappus rejects it.
#include <hip/hip_runtime.h>

__device__ int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

extern "C" __global__ void recursive(int* out, int n) { out[0] = fib(n); }
