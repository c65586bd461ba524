// Kernels exercising the compatibility runtime: barriers, shared memory, atomics, indices.
#include <hip/hip_runtime.h>
#include <stdint.h>

// Tree reduction in static shared memory; blockDim.x == 256.
__global__ void block_sum(const float* x, float* out) {
    __shared__ float buf[256];
    unsigned t = threadIdx.x;
    buf[t] = x[blockIdx.x * 256 + t];
    __syncthreads();
    for (unsigned s = 128; s > 0; s >>= 1) {
        if (t < s) buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
}

// The same with dynamic shared memory (extern __shared__), any power-of-two block size.
__global__ void block_sum_dyn(const float* x, float* out) {
    extern __shared__ float sdata[];
    unsigned t = threadIdx.x;
    sdata[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) sdata[t] += sdata[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = sdata[0];
}

// HIP's macro spelling of dynamic shared memory, with ints.
__global__ void block_sum_macro(const int* x, int* out) {
    HIP_DYNAMIC_SHARED(int, buf)
    unsigned t = threadIdx.x;
    buf[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
}

// Needs a real barrier: every thread reads what its right neighbour wrote before the barrier.
__global__ void rotate(int* out) {
    __shared__ int s[1024];
    unsigned n = blockDim.x, t = threadIdx.x;
    s[t] = (int)(t * 10 + blockIdx.x);
    __syncthreads();
    int v = s[(t + 1) % n];
    __syncthreads();
    s[t] = v + 1;  // a second phase, reusing the array
    __syncthreads();
    out[blockIdx.x * n + t] = s[(t + n - 1) % n];
}

// Threads that leave early do not block the barrier for the others.
__global__ void early_exit(int* out) {
    __shared__ int s[256];
    unsigned t = threadIdx.x;
    if (t % 3 == 0) {
        out[t] = -1;
        return;
    }
    s[t] = (int)t;
    __syncthreads();
    out[t] = s[(t % 3 == 1) ? t + 1 : t - 1];
}

__global__ void sync_count(const int* pred, int* out) {
    unsigned t = threadIdx.x;
    int c = __syncthreads_count(pred[t]);
    int a = __syncthreads_and(pred[t]);
    int o = __syncthreads_or(pred[t]);
    out[3 * t] = c;
    out[3 * t + 1] = a;
    out[3 * t + 2] = o;
}

__global__ void atomics(int* ci, unsigned* cu, unsigned long long* cull, float* cf, int* misc) {
    unsigned tid = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(ci, 1);
    atomicAdd(cu, 2u);
    atomicAdd(cull, 3ull);
    atomicAdd(cf, 0.5f);
    atomicMax(&misc[0], (int)tid);
    atomicMin(&misc[1], -(int)tid);
    atomicOr(&misc[2], 1 << (tid % 31));
    atomicXor(&misc[3], (int)tid);
    int old;
    do {
        old = misc[4];
    } while (atomicCAS(&misc[4], old, old + 1) != old);
    atomicExch(&misc[5], (int)tid);
    atomicSub(&misc[6], 2);
    atomicInc((unsigned*)&misc[7], 9u);
    atomicAnd(&misc[8], ~(1 << (tid % 16)));
    __syncthreads();
    atomicAdd(&misc[9], 1);  // after a barrier too
}

// Every thread records where it is: block and thread indices and the launch shape.
__global__ void indices(unsigned* out) {
    unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    unsigned local = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    unsigned per = blockDim.x * blockDim.y * blockDim.z;
    unsigned* o = out + 8 * (block * per + local);
    o[0] = blockIdx.x; o[1] = blockIdx.y; o[2] = blockIdx.z;
    o[3] = threadIdx.x; o[4] = threadIdx.y; o[5] = threadIdx.z;
    o[6] = blockDim.x * 100 + blockDim.y * 10 + blockDim.z;
    o[7] = gridDim.x * 100 + gridDim.y * 10 + gridDim.z;
    __syncthreads();  // indices survive a barrier
    if (o[3] != threadIdx.x || o[4] != threadIdx.y || o[5] != threadIdx.z) o[0] = 0xdead;
}

__global__ void math(const float* x, float* out) {
    unsigned i = threadIdx.x;
    float v = x[i];
    float* o = out + 10 * i;
    o[0] = sqrtf(v);
    o[1] = expf(v);
    o[2] = __expf(v);
    o[3] = fmaxf(v, 1.0f);
    o[4] = rsqrtf(v);
    o[5] = __fdividef(v, 3.0f);
    o[6] = logf(v);
    o[7] = sinf(v) + cosf(v);
    o[8] = tanhf(v);
    o[9] = powf(v, 1.5f) + (float)min(3, max(1, 2));
}

__global__ void talk(int* out) {
    printf("thread %d of block %d says hello\n", (int)threadIdx.x, (int)blockIdx.x);
    out[threadIdx.x] = (int)threadIdx.x + 1;
}

struct Pair {
    int lo;
    int hi;
};

__global__ void scalars(int8_t a, int16_t b, int32_t c, int64_t d, uint8_t e, uint16_t f, uint32_t g, uint64_t h,
                        float fl, double db, Pair p, int64_t* out) {
    out[0] = a; out[1] = b; out[2] = c; out[3] = d;
    out[4] = e; out[5] = f; out[6] = g; out[7] = (int64_t)h;
    out[8] = (int64_t)(fl * 1000.0f); out[9] = (int64_t)(db * 1000000.0);
    out[10] = p.lo; out[11] = p.hi;
}

// A thread-heavy block: 1024 threads, every one blocks at two barriers.
__global__ void wide(int* out) {
    __shared__ int s[1024];
    unsigned t = threadIdx.x;
    s[t] = (int)t;
    __syncthreads();
    int v = s[1023 - t];
    __syncthreads();
    s[t] = v * 2;
    __syncthreads();
    out[t] = s[t];
}
