// One CNN layer on a greyscale image (the thesis' inference workload): 5x5 convolution with
// zero padding, ReLU, 2x2 max-pool. n is the image side (224).
#include <hip/hip_runtime.h>

extern "C" __global__ void conv5x5(const float* img, const float* w, float* out, int n) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= n || y >= n) return;
    float acc = 0.0f;
    for (int i = 0; i < 5; i++) {
        int yy = y + i - 2;
        for (int j = 0; j < 5; j++) {
            int xx = x + j - 2;
            float v = (yy >= 0 && yy < n && xx >= 0 && xx < n) ? img[yy * n + xx] : 0.0f;
            acc += v * w[i * 5 + j];
        }
    }
    out[y * n + x] = acc;
}

extern "C" __global__ void relu(float* x, int count) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) x[i] = fmaxf(x[i], 0.0f);
}

extern "C" __global__ void maxpool2(const float* in, float* out, int n) {
    int m = n / 2;
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= m || y >= m) return;
    const float* p = in + (2 * y) * n + 2 * x;
    out[y * m + x] = fmaxf(fmaxf(p[0], p[1]), fmaxf(p[n], p[n + 1]));
}
