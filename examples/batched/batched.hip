// The inference layer over a batch of 224x224 images: the batch index is blockIdx.z.
#include <hip/hip_runtime.h>

extern "C" __global__ void conv5x5_batched(const float* img, const float* w, float* out, int n) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= n || y >= n) return;
    const float* src = img + (size_t)blockIdx.z * n * n;
    float acc = 0.0f;
    for (int i = 0; i < 5; i++) {
        int yy = y + i - 2;
        for (int j = 0; j < 5; j++) {
            int xx = x + j - 2;
            float v = (yy >= 0 && yy < n && xx >= 0 && xx < n) ? src[yy * n + xx] : 0.0f;
            acc += v * w[i * 5 + j];
        }
    }
    out[(size_t)blockIdx.z * n * n + y * n + x] = fmaxf(acc, 0.0f);  // ReLU fused
}

extern "C" __global__ void maxpool2_batched(const float* in, float* out, int n) {
    int m = n / 2;
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= m || y >= m) return;
    const float* p = in + (size_t)blockIdx.z * n * n + (2 * y) * n + 2 * x;
    out[(size_t)blockIdx.z * m * m + y * m + x] = fmaxf(fmaxf(p[0], p[1]), fmaxf(p[n], p[n + 1]));
}
