/* pappus CPU backend */
#error "pappus cpu: half precision (hip_fp16.h) is not supported by the CPU backend"
