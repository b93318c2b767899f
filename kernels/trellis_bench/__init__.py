"""Benchmarks of the kernels and the pipeline stages (lab side: the runtime never imports this).

- ``harness``         case registry, CUDA-event / CUDA-graph timing, shared inputs, markdown report
- ``kernel_cases``    each Triton kernel of `trellis_kernels` against the PyTorch op it replaces
- ``stage_cases``     the pipeline's stages at the official TRELLIS-image-large sizes, plain vs fast path
- ``bench``           ``python -m trellis_bench.bench [--groups ...] [--out ...]`` runs the registered cases
- ``product_timing``  image -> GLB through `TrellisPipeline.generate` at the official sizes
- ``device_run.sh``   what the lent GPU runs for docs/BENCHMARKS.md
"""
