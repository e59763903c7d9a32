"""dbrt benchmarks: model-only sweeps, the full pipeline on a video, post-processing, GPU proof.

Run everything with `python -m benchmarks.run_all` (or `dbrt bench all`); results go to
`benchmarks/results/<machine>/` (see benchmarks/README.md for what each number includes).
"""
