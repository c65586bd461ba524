// Device malloc: bounded by the heap limit, NULL at limit 0.
#include <hip/hip_runtime.h>
#include <stdint.h>

__global__ void heap_probe(uint64_t n, uint64_t count, uint64_t* out) {
    uint64_t ok = 0, distinct = 1;
    unsigned char* prev = 0;
    for (uint64_t i = 0; i < count; i++) {
        unsigned char* p = (unsigned char*)malloc(n);
        if (!p) break;
        for (uint64_t j = 0; j < n; j++) p[j] = (unsigned char)i;  // usable
        if (p == prev) distinct = 0;
        prev = p;
        ok++;
        free(p);
    }
    out[0] = ok;
    out[1] = distinct;
    out[2] = (uint64_t)(malloc(0) != 0);
}
