// Measures what device malloc returns under the configured heap limit (device tests only: it is
// refused at registration because it calls malloc).
#include <hip/hip_runtime.h>

// out[0] = 1 if malloc(n) returned memory, out[1] = the pointer, out[2] = bytes obtained by
// repeated malloc(chunk) until it fails (bounded by `tries`).
extern "C" __global__ void heap_probe(unsigned long long* out, unsigned long long n, unsigned long long chunk,
                                      unsigned long long tries) {
  void* p = malloc(n);
  out[0] = p != 0;
  out[1] = (unsigned long long)p;
  if (p) free(p);
  unsigned long long got = 0;
  void* keep[64];
  unsigned long long k = 0;
  for (; k < tries && k < 64; k++) {
    keep[k] = malloc(chunk);
    if (!keep[k]) break;
    got += chunk;
  }
  for (unsigned long long j = 0; j < k; j++) free(keep[j]);
  out[2] = got;
}
