# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The benchmarks behind the numbers of the README and of the documentation's Benchmarks page, run from the
repository root as modules:

    python -m benchmarks.speed         # step time, memory and EMA cost of every method -> results/speed.{json,md}
    python -m benchmarks.accuracy      # offline few-shot accuracy of every method -> results/accuracy.{json,md,png}
    python -m benchmarks.paper_table   # the paper's setting (needs the Hub and a GPU) -> results/paper_table.*

`benchmarks.common` holds what they share. `speed.py` is the command; its pieces are `speed_models.py` (the CPU
models), `stepping.py` (trainers stepped one optimizer step at a time, shared with the GPU preset), `memory.py`
(peak step memory), `bare_loop.py` (the same steps without the Trainer), `speed_cpu.py` and `speed_lora.py` (one
model's measurements and the report, per section); the GPU preset is `speed_gpu.py` with `gpu_models.py`,
`gpu_steppers.py`, `gpu_counts.py` and `gpu_report.py`; `accuracy.py` reads its targets from `accuracy_targets.py`
and reports through `accuracy_report.py`; `epoch.py` (one epoch from JPEG files through the run driver) and
`search_cost.py` (a search against plain runs) time the run driver from outside with `run_timing.py`; the few-shot
grids `shots_curve.py`, `text.py` and `unlabeled.py` run through `grid.py`. Not part of the installed `smile_hf`
package.
"""
