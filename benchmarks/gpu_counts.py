# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What one step of the GPU speed preset does besides computing: host syncs and dispatched operators
(`DispatchCounter`), CUDA's sync-debug warnings, kernel launches (`torch.profiler`), and peak memory."""

from __future__ import annotations

import gc
import re
import warnings

import torch

from smile_hf.profiling import DispatchCounter

from .gpu_steppers import LoopStepper
from .memory import peak_step_memory
from .stepping import synchronize

LAUNCH_EVENT = re.compile(r"^(cudaLaunch|cuLaunch|cudaGraphLaunch)")
"""CUDA runtime / driver calls that launch work on the GPU (`cudaLaunchKernel`, `cudaLaunchKernelExC`,
`cuLaunchKernel`, `cuLaunchKernelEx`, `cudaLaunchCooperativeKernel`, `cudaGraphLaunch`)."""
RUNTIME_SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def dispatch_counts(stepper) -> dict:
    """Host syncs (by operator), dispatched operators and cross-device copies of one `stepper.step()`."""
    with DispatchCounter() as counter:
        stepper.step()
    syncs = dict(sorted(counter.host_syncs.items()))
    return {
        "host_syncs": syncs,
        "host_syncs_total": int(sum(syncs.values())),
        "dispatched_ops": int(counter.total),
        "cross_device_copies": int(counter.cross_device_copies),
    }


def ordinary_step_counts(stepper: LoopStepper) -> dict:
    """`dispatch_counts` of a step without an EMA update."""
    if stepper.next_step_updates_ema():
        stepper.step()
    return dispatch_counts(stepper)


def ema_step_counts(stepper: LoopStepper) -> dict | None:
    """`dispatch_counts` of a step with an EMA update (None without an EMA teacher)."""
    if getattr(stepper.trainer, "teacher", None) is None or stepper.trainer.teacher.decay >= 1.0:
        return None
    while not stepper.next_step_updates_ema():
        stepper.step()
    return dispatch_counts(stepper)


def sync_debug_warnings(stepper) -> int:
    """CUDA only: the warnings `torch.cuda.set_sync_debug_mode("warn")` issues over one step (the mode restored)."""
    synchronize(stepper.device)
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            stepper.step()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    synchronize(stepper.device)
    return sum("synchroniz" in str(w.message) for w in caught)


def profiled_launches(stepper) -> dict:
    """CUDA only: the kernel launches (`cudaLaunchKernel`-like runtime calls), the kernels that ran on the GPU and
    the runtime's synchronising calls that `torch.profiler` records over one step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    synchronize(stepper.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        stepper.step()
    events = prof.key_averages()
    launches = {e.key: int(e.count) for e in events if LAUNCH_EVENT.match(e.key)}
    runtime_syncs = {e.key: int(e.count) for e in events if e.key in RUNTIME_SYNC_EVENTS}
    gpu = [e for e in events if e.device_type == DeviceType.CUDA]
    kernels = sum(int(e.count) for e in gpu if not e.key.startswith(("Memcpy", "Memset")))
    return {
        "launches": dict(sorted(launches.items())),
        "launches_total": int(sum(launches.values())),
        "gpu_kernels": kernels,
        "runtime_sync_calls": dict(sorted(runtime_syncs.items())),
    }


def step_memory(build, device: str) -> tuple[LoopStepper, dict[str, float]]:
    """Build a stepper with `build()` and measure the peak memory of one step (after one warm-up step). CUDA: the
    allocator's peak above what was allocated before `build()` (so the other steppers alive are not counted);
    CPU: `peak_step_memory` (held tensors + a dispatch-mode tracker of the step's allocations)."""
    if not device.startswith("cuda"):
        stepper = build()
        return stepper, peak_step_memory(stepper)
    gc.collect()
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    stepper = build()
    stepper.step()
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    held = torch.cuda.memory_allocated() - baseline
    stepper.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - baseline
    return stepper, {"held_mib": held / 2**20, "step_peak_mib": (peak - held) / 2**20, "peak_mib": peak / 2**20}
