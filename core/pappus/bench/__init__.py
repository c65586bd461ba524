"""Benchmarks: open-loop load, the thesis workloads, the dedicated baseline, sweeps and reports.

``pappus bench`` (``pappus.cli.bench_cmd``), ``pappus demo`` (``pappus.demo``) and
``benchmarks/run_all.py`` are built from these pieces:

- :mod:`.loadgen`: Poisson arrivals, latency from the scheduled send time, errors counted;
- :mod:`.workloads`: matmul128, inference<N>, batched<B>, built from ``examples/`` and checked
  against numpy;
- :mod:`.targets`: pappus in process (hot, cold, mixes), the dedicated baseline, HTTP;
- :mod:`.dedicated`: the dedicated baseline server (no isolation), in process or over HTTP;
- :mod:`.sweep`, :mod:`.report`, :mod:`.suite`: sweeps, tables and plots, the thesis evaluation.

Importing this package starts nothing.
"""
