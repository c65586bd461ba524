// Kernels that use neither device malloc nor printf: the thesis matmul, a tiled f32 matmul with
// static __shared__ tiles and __syncthreads, a reduction through HIP_DYNAMIC_SHARED, by-value
// scalar and struct arguments, and atomics.
#include <hip/hip_runtime.h>

struct Big24 {  // 24 bytes, 8-byte aligned
  long long a;
  double b;
  int c;
};

// B = A x A^T for a square int64 matrix A of `size` bytes.
extern "C" __global__ void matmul_at_i64(const long long* A, unsigned long long size, long long* B) {
  unsigned long long n = 1;
  while (n * n * 8 < size) n++;
  unsigned long long row = hipBlockIdx_y * hipBlockDim_y + hipThreadIdx_y;
  unsigned long long col = hipBlockIdx_x * hipBlockDim_x + hipThreadIdx_x;
  if (row >= n || col >= n) return;
  long long sum = 0;
  for (unsigned long long k = 0; k < n; k++) sum += A[row * n + k] * A[col * n + k];
  B[row * n + col] = sum;
}

#define TILE 16
// C = A x B for n x n float matrices, 16x16 tiles in static shared memory (2 KiB).
extern "C" __global__ void matmul_tiled_f32(const float* A, const float* B, float* C, int n) {
  __shared__ float ta[TILE][TILE];
  __shared__ float tb[TILE][TILE];
  int row = blockIdx.y * TILE + threadIdx.y;
  int col = blockIdx.x * TILE + threadIdx.x;
  float acc = 0.0f;
  for (int t = 0; t < (n + TILE - 1) / TILE; t++) {
    int ac = t * TILE + threadIdx.x, br = t * TILE + threadIdx.y;
    ta[threadIdx.y][threadIdx.x] = (row < n && ac < n) ? A[row * n + ac] : 0.0f;
    tb[threadIdx.y][threadIdx.x] = (br < n && col < n) ? B[br * n + col] : 0.0f;
    __syncthreads();
    for (int k = 0; k < TILE; k++) acc += ta[threadIdx.y][k] * tb[k][threadIdx.x];
    __syncthreads();
  }
  if (row < n && col < n) C[row * n + col] = acc;
}

// One partial sum per block of 256 floats, through a static __shared__ tile (1024 bytes).
extern "C" __global__ void block_sum(const float* in, float* out) {
  __shared__ float tile[256];
  tile[threadIdx.x] = in[blockIdx.x * 256 + threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.0f;
    for (int i = 0; i < 256; i++) s += tile[i];
    out[blockIdx.x] = s;
  }
}

// Sum of `n` ints per block through dynamic shared memory and a warp shuffle.
extern "C" __global__ void dyn_sum(const int* in, int* out, unsigned int n) {
  HIP_DYNAMIC_SHARED(int, buf)
  unsigned int i = hipThreadIdx_x;
  buf[i] = i < n ? in[hipBlockIdx_x * n + i] : 0;
  __syncthreads();
  int v = buf[i];
  for (int d = 16; d > 0; d /= 2) v += __shfl_down(v, d);
  if (__lane_id() == 0) atomicAdd(&out[hipBlockIdx_x], v);
}

// By-value arguments: param offsets 0 (ptr), 8 (int), 12 (float), 16 (double), 24 (struct), 48 (char).
extern "C" __global__ void scalars(long long* out, int i, float f, double d, Big24 s, char c) {
  out[0] = i + (long long)f + (long long)d + s.a + (long long)s.b + s.c + c;
}

// Atomics have the same names in HIP and CUDA.
extern "C" __global__ void histogram(const unsigned char* in, unsigned long long n, unsigned int* bins) {
  unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) atomicAdd(&bins[in[i]], 1u);
}

// No parameters at all.
extern "C" __global__ void noop() {}
