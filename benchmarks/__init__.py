# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The benchmarks behind the README's numbers, run from the repository root as modules:

    python -m benchmarks.speed         # step time, memory and EMA cost of every method -> results/speed.{json,md}
    python -m benchmarks.accuracy      # offline few-shot accuracy of every method -> results/accuracy.{json,md,png}
    python -m benchmarks.paper_table   # the paper's setting (needs the Hub and a GPU) -> results/paper_table.*

`benchmarks.common` holds what they share. Not part of the installed `smile_hf` package.
"""
