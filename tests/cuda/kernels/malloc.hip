// A kernel that allocates device memory: pappus must flag it (uses_heap).
#include <hip/hip_runtime.h>

extern "C" __global__ void uses_malloc(int* out, unsigned long long n) {
  int* p = (int*)malloc(n * sizeof(int));
  if (p) {
    p[0] = 1;
    out[0] = p[0];
    free(p);
  }
}
