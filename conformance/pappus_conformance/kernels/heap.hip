// Device malloc under the malloc-heap limit: writes 1 to *ok if malloc(bytes) gave memory.
#include <hip/hip_runtime.h>
#include <stdint.h>
#include <stddef.h>

extern "C" __global__ void malloc_probe(uint64_t bytes, unsigned long long* ok) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        uint8_t* p = (uint8_t*)malloc((size_t)bytes);
        if (p != NULL) {
            for (uint64_t i = 0; i < bytes; i += 64) p[i] = 1;  // the memory must be usable
            *ok = 1;
            free(p);
        } else {
            *ok = 0;
        }
    }
}
