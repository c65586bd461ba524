// B = A x A^T for a square int64 matrix A (the thesis' matmul workload).
// `size` is the byte size of A (passed as {"Sizeof": "A"}), so n = sqrt(size / 8).
#include <hip/hip_runtime.h>
#include <stdint.h>

__device__ static int side(uint64_t size) {
    int n = (int)sqrt((double)(size / sizeof(int64_t)));
    while ((uint64_t)n * n * sizeof(int64_t) > size) n--;
    return n;
}

// Naive: one output element per thread. The loops stride by the whole grid, so the config's fixed
// 128 x 128 grid covers any n (for n <= 128 each thread runs one iteration, as the thesis' kernel).
extern "C" __global__ void matmul_at(const int64_t* A, uint64_t size, int64_t* B) {
    int n = side(size);
    for (int row = blockIdx.y * blockDim.y + threadIdx.y; row < n; row += gridDim.y * blockDim.y) {
        for (int col = blockIdx.x * blockDim.x + threadIdx.x; col < n; col += gridDim.x * blockDim.x) {
            int64_t sum = 0;
            for (int k = 0; k < n; k++) sum += A[row * n + k] * A[col * n + k];
            B[row * n + col] = sum;
        }
    }
}

// Tiled: 16x16 tiles of A staged in shared memory, one __syncthreads per phase. Each block strides
// over output tiles by the grid; the loop bounds depend on the block only, so every thread of a
// block reaches the same barriers.
#define TILE 16
extern "C" __global__ void matmul_at_tiled(const int64_t* A, uint64_t size, int64_t* B) {
    __shared__ int64_t rows[TILE][TILE + 1];
    __shared__ int64_t cols[TILE][TILE + 1];
    int n = side(size);
    int tx = threadIdx.x, ty = threadIdx.y;
    for (int by = blockIdx.y; by * TILE < n; by += gridDim.y) {
        for (int bx = blockIdx.x; bx * TILE < n; bx += gridDim.x) {
            int row = by * TILE + ty;
            int col = bx * TILE + tx;
            int64_t sum = 0;
            for (int t = 0; t < n; t += TILE) {
                int r = by * TILE + ty, c = bx * TILE + ty;
                rows[ty][tx] = (r < n && t + tx < n) ? A[r * n + t + tx] : 0;
                cols[ty][tx] = (c < n && t + tx < n) ? A[c * n + t + tx] : 0;
                __syncthreads();
                for (int k = 0; k < TILE; k++) sum += rows[ty][k] * cols[tx][k];
                __syncthreads();
            }
            if (row < n && col < n) B[row * n + col] = sum;
        }
    }
}
