// Kernels that use neither device malloc nor host calls: a matmul (the thesis workload), one with
// a static __shared__ array, and one with by-value scalar and struct arguments.
#include <hip/hip_runtime.h>

struct Pair {  // 16 bytes, 8-byte aligned
  int a;
  float b;
  double c;
};

// B = A x A^T for a square int64 matrix A of `size` bytes.
extern "C" __global__ void matmul_at_i64(const long long* A, unsigned long long size, long long* B) {
  unsigned long long n = 1;
  while (n * n * 8 < size) n++;
  unsigned long long row = blockIdx.y * blockDim.y + threadIdx.y;
  unsigned long long col = blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= n || col >= n) return;
  long long sum = 0;
  for (unsigned long long k = 0; k < n; k++) sum += A[row * n + k] * A[col * n + k];
  B[row * n + col] = sum;
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

// By-value arguments: kernarg offsets 0 (ptr), 8 (int), 12 (float), 16 (struct), 32 (char), 40 (double).
extern "C" __global__ void scalars(int* out, int i, float f, Pair p, char c, double d) {
  out[0] = i + (int)f + p.a + (int)p.b + (int)p.c + c + (int)d;
}

// __launch_bounds__ becomes .max_flat_workgroup_size 256 in the metadata.
extern "C" __global__ void __launch_bounds__(256) bounded_fill(int* out, int value) {
  out[blockIdx.x * blockDim.x + threadIdx.x] = value;
}
