// Module globals of the pappus conformance suite, in a library of their own: a backend may refuse
// any code object with writable device globals at registration (the CUDA backend does), which
// satisfies the property, and must not cost it the rest of the suite's kernels.
#include <hip/hip_runtime.h>
#include <stdint.h>
#include <stddef.h>

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)blockDim.x * gridDim.x)

// Module globals outlive an invocation in a cached module.
__device__ uint32_t module_secret[256];

extern "C" __global__ void write_global(uint32_t pattern) {
    GRID_STRIDE(i, 256) { module_secret[i] = pattern | 1u; }
}

extern "C" __global__ void read_global(unsigned long long* out) {
    unsigned long long found = 0;
    GRID_STRIDE(i, 256) { found += module_secret[i] != 0; }
    if (found) atomicAdd(out, found);
}
