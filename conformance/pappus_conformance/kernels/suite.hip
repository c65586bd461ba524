// Kernels of the pappus conformance suite. Portable HIP: they build for the CPU backend (its
// compatibility header), for AMD GPUs (hipcc) and for NVIDIA GPUs (the CUDA backend's shim).
// Each is small and does one thing the suite needs; none of them is clever.
#include <hip/hip_runtime.h>
#include <stdint.h>
#include <stddef.h>

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)blockDim.x * gridDim.x)

// Tenant A: write a secret pattern into every byte of a buffer.
extern "C" __global__ void fill_secret(uint8_t* p, size_t n, uint32_t pattern) {
    GRID_STRIDE(i, n) { p[i] = (uint8_t)(pattern >> (8 * (i & 3))) | 1u; }
}

// Tenant B: count the nonzero bytes it finds in a buffer it never wrote. The count is *added*
// to *out, so leftovers in the output buffer itself show as well.
extern "C" __global__ void count_nonzero(const uint8_t* p, size_t n, unsigned long long* out) {
    unsigned long long local = 0;
    GRID_STRIDE(i, n) { local += p[i] != 0; }
    if (local) atomicAdd(out, local);
}

#define LEFTOVER_WORDS 2048

// Shared (LDS) and private memory: tenant A fills both with a secret...
extern "C" __global__ void fill_scratch(uint32_t pattern, unsigned long long* sink) {
    __shared__ uint32_t shared_area[LEFTOVER_WORDS];
    volatile uint32_t private_area[256];
    for (int i = threadIdx.x; i < LEFTOVER_WORDS; i += blockDim.x) shared_area[i] = pattern ^ (uint32_t)i;
    for (int i = 0; i < 256; ++i) private_area[i] = pattern + (uint32_t)i;
    __syncthreads();
    if (threadIdx.x == 0 && private_area[7] == 0 && shared_area[3] == 0) atomicAdd(sink, 1ull);
}

// ...and tenant B reads them before writing anything: everything must be zero.
extern "C" __global__ void probe_scratch(unsigned long long* out) {
    __shared__ uint32_t shared_area[LEFTOVER_WORDS];
    volatile uint32_t private_area[256];
    unsigned long long found = 0;
    for (int i = threadIdx.x; i < LEFTOVER_WORDS; i += blockDim.x) found += shared_area[i] != 0;
    for (int i = 0; i < 256; ++i) found += private_area[i] != 0;
    if (found) atomicAdd(out, found);
}

// Faults. Offsets are kernel arguments so no compiler can prove the access out of bounds.
extern "C" __global__ void write_at(uint8_t* p, uint64_t offset) {
    if (threadIdx.x == 0 && blockIdx.x == 0) ((volatile uint8_t*)p)[offset] = 0xAA;
}

extern "C" __global__ void read_at(const uint8_t* p, uint64_t offset, uint8_t* out) {
    if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = ((volatile const uint8_t*)p)[offset];
}

extern "C" __global__ void write_null(uint64_t zero) {
    if (threadIdx.x == 0 && blockIdx.x == 0) *(volatile uint32_t*)(uintptr_t)zero = 1u;
}

// Reads 8 bytes at an address it was given: what a kernel reaches outside its own buffers.
extern "C" __global__ void read_address(uint64_t address, uint64_t* out) {
    if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = *(volatile const uint64_t*)(uintptr_t)address;
}

extern "C" __global__ void trap_now(uint8_t* p) {
    if (threadIdx.x == 0 && blockIdx.x == 0) { p[0] = 1; __builtin_trap(); }
}

// Runs until something stops it, writing to its buffer all the while. (2^64 rounds is forever;
// the loop's exit is there because hipcc 5.2 crashes on a loop it can prove infinite.)
extern "C" __global__ void spin_writing(uint8_t* p, size_t n) {
    for (uint64_t round = 1; round != 0; ++round) {
        GRID_STRIDE(i, n) { ((volatile uint8_t*)p)[i] = (uint8_t)(round | 1u); }
    }
}

// An honest, checkable workload: out[i] = a[i] * k + i.
extern "C" __global__ void affine(const int64_t* a, int64_t* out, size_t count, int64_t k) {
    GRID_STRIDE(i, count) { out[i] = a[i] * k + (int64_t)i; }
}

// Copies the bytes of every scalar argument it received, in order and packed, into out: what
// the backend delivered, of every width and kind, whatever padding the kernel's ABI puts
// between them (a u16 after an i8, a double after a float).
static __device__ void put_bytes(uint8_t* out, unsigned* at, const void* value, unsigned n) {
    const uint8_t* bytes = (const uint8_t*)value;
    for (unsigned i = 0; i < n; ++i) out[(*at)++] = bytes[i];
}

extern "C" __global__ void echo_scalars(uint8_t* out, int8_t a, uint16_t b, int32_t c, float d, uint64_t e,
                                        double f, int16_t g, uint8_t h, uint32_t v) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    unsigned at = 0;
    put_bytes(out, &at, &a, sizeof a);
    put_bytes(out, &at, &b, sizeof b);
    put_bytes(out, &at, &c, sizeof c);
    put_bytes(out, &at, &d, sizeof d);
    put_bytes(out, &at, &e, sizeof e);
    put_bytes(out, &at, &f, sizeof f);
    put_bytes(out, &at, &g, sizeof g);
    put_bytes(out, &at, &h, sizeof h);
    put_bytes(out, &at, &v, sizeof v);
}
