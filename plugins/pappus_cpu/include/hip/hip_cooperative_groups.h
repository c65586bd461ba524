/* pappus CPU backend */
#error "pappus cpu: cooperative groups are not supported by the CPU backend (blocks run one at a time, grids cannot synchronise)"
