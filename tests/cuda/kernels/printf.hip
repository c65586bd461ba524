// A kernel that prints: pappus must flag it (uses_hostcall).
#include <hip/hip_runtime.h>

extern "C" __global__ void uses_printf(const int* in) { printf("value %d\n", in[0]); }
