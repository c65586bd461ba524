// Writable device globals outlive an invocation in a loaded module: pappus rejects them.
#include <hip/hip_runtime.h>

__device__ int counter;

extern "C" __global__ void bump(int* out) { out[0] = counter++; }
