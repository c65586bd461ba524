// On-chip state a tenant's kernels leave behind that the pool's zeroing cannot reach: shared
// memory and per-thread local memory (spilled registers, local arrays, the stack) persist on the
// GPU from one kernel to the next. CudaDevice runs these after an invocation that used either,
// before the next tenant's kernels. Trusted code of pappus; scrub.ptx is generated from this file
// (make -C plugins/pappus_cuda/scrub; a test checks it is current where nvcc exists) and JIT-
// compiled by the driver for whatever GPU is present.
//
// Coverage needs every block resident at once: each block waits (bounded by `spin` clocks) until
// all `expected` blocks have arrived, and the host sizes the grid from the driver's occupancy
// for the kernel, so every warp slot of every SM (local memory) and all of each SM's shared
// memory (one maximal block per SM) is written. `complete` counts blocks that saw all others:
// the host checks it equals `expected`, else the scrub is reported as incomplete.
#include <stdint.h>

__device__ __forceinline__ void wait_for_all(unsigned int* arrived, unsigned int* complete,
                                             unsigned int expected, long long spin) {
    __shared__ unsigned int all_here;
    if (threadIdx.x == 0) {
        atomicAdd(arrived, 1u);
        long long start = clock64();
        while (*(volatile unsigned int*)arrived < expected && clock64() - start < spin) {
        }
        all_here = *(volatile unsigned int*)arrived >= expected;
        if (all_here) atomicAdd(complete, 1u);
    }
    __syncthreads();
}

extern "C" __global__ void __launch_bounds__(1024)
pappus_scrub_shared(unsigned int* arrived, unsigned int* complete, unsigned int expected, long long spin,
                    unsigned int bytes) {
    extern __shared__ uint32_t area[];
    wait_for_all(arrived, complete, expected, spin);
    volatile uint32_t* p = area;
    for (unsigned int i = threadIdx.x; i < bytes / 4; i += blockDim.x) p[i] = 0u;
}

// `words` (at most BYTES / 4) comes at run time, so the frame cannot live in registers.
#define SCRUB_LOCAL(NAME, BYTES)                                                                  \
    extern "C" __global__ void __launch_bounds__(256)                                             \
    NAME(unsigned int* arrived, unsigned int* complete, unsigned int expected, long long spin,     \
         unsigned int words) {                                                                    \
        volatile uint32_t frame[(BYTES) / 4];                                                     \
        wait_for_all(arrived, complete, expected, spin);                                          \
        _Pragma("unroll 1") for (unsigned int i = 0; i < words && i < (BYTES) / 4; ++i) frame[i] = 0u; \
    }

SCRUB_LOCAL(pappus_scrub_local_1k, 1024)
SCRUB_LOCAL(pappus_scrub_local_4k, 4096)
SCRUB_LOCAL(pappus_scrub_local_16k, 16384)

// Registers: a kernel that reads a register before writing it sees what the last kernel to use
// that register on the SM left there. One block of 256 threads at the most registers a thread
// may have (255, allocated as 256) takes an SM's whole register file (64K), so one block per SM,
// all resident, holds every register of the GPU. Each thread loads REG_WORDS zero words from
// `zeros` with volatile loads (which the compiler may neither drop nor move) and keeps them all
// live to the end (the stores below never run: `expected` is never 0), so the compiler must
// spread them over every register it can give a kernel (R0-R252) and spill the rest.
// tests/cuda/test_scrub_kernels.py checks the machine code: every one of them is written on the
// path every thread takes.
#define REG_WORDS 256
extern "C" __global__ void __launch_bounds__(256, 1)
pappus_scrub_registers(unsigned int* arrived, unsigned int* complete, unsigned int expected, long long spin,
                       uint4* zeros) {
    wait_for_all(arrived, complete, expected, spin);
    uint4 v[REG_WORDS / 4];
#pragma unroll
    for (int i = 0; i < REG_WORDS / 4; ++i)
        asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(v[i].x), "=r"(v[i].y), "=r"(v[i].z), "=r"(v[i].w)
                     : "l"(zeros + i));
    if (expected == 0u) {
#pragma unroll
        for (int i = 0; i < REG_WORDS / 4; ++i) zeros[i] = v[i];
    }
}
