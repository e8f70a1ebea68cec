# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Reading a forward pass from inside: the one hook mechanism of the package, used by the [`BackboneAdapter`] (the
trunk, the stages and the classifier(s)), by the probe that finds a model's stages
([`smile_hf.backbones.structure.probe`]) and by the methods that read inner layers (DELTA's channel counts, the hook
points of `delta_tllib`).

The hooks are registered once per module (the first time the module takes part in a captured forward pass) and stay
there, doing nothing outside [`capturing`]. A [`Capture`] says what to read in one forward pass and receives it:
- the trunk's last hidden state,
- the input of the classifier(s) (the pooled feature), with the source head applied to it,
- optionally each stage's output, and (manifold mixup) one stage's output replaced by a function of it,
- optionally every call of other modules (their input and output, [`Capture.record`]).
Registering and removing hooks at every forward pass costs host time and, under `torch.compile`, invalidates the
compiled graph; these hooks are installed once and switched on per forward pass. A one-off pass (the probe) can
leave no hook behind (`capturing(capture, keep_hooks=False)`). [`record_outputs`] keeps every output of a module in
a sink, captured pass or not (the regularised layers of a method, read when its loss is computed).

Activation checkpointing (`torch.utils.checkpoint`, reentrant or not) runs the forward pass of a checkpointed layer a
second time during the backward pass, and the forward hooks of the modules inside it fire again. The hooks ignore
that recomputation ([`recomputing`]): a forward pass is read once, when it runs, whatever is recomputed later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableSequence, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

_HOOKED = "_smile_hf_capture_hooks"  # module attribute: the hooks are installed
_SINKS = "_smile_hf_capture_sinks"  # module attribute: where every output of the module is appended
_active: list[Capture] = []  # the capture of the forward pass running now (a stack: captures may nest)


def recomputing() -> bool:
    """Whether a module is being called while autograd runs a backward pass: the recomputation of a checkpointed
    layer (`torch.utils.checkpoint`, either mode), whose outputs the forward pass already read. Never inside a
    graph `torch.compile` traces: its backward recomputes within the compiled graph, without calling hooks (and the
    query would break the graph)."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._current_graph_task_id() != -1


def first_tensor(output):
    """The first tensor of a module output (stage outputs can be nested tuples, as PVT-v2's are)."""
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


def map_first_tensor(output, fn):
    """`output` with its first tensor replaced by `fn(tensor)` (stage outputs can be nested tuples)."""
    if isinstance(output, (tuple, list)):
        return (map_first_tensor(output[0], fn), *output[1:])
    return fn(output)


@dataclass(eq=False)
class Capture:
    """What one forward pass should expose, and what it exposed.

    Args:
        trunk: the module whose output holds the last hidden state (`last_hidden_state` or its first element).
        heads: the final linear classifier(s), in calling order; the pooled feature is their input (concatenated
            unless `shared_head_input`).
        source_head: applied to the pooled feature inside the forward pass (so that DDP sees it).
        stages: the stages whose outputs are recorded, in order (empty: none).
        mix_stage: a stage whose output is replaced by `mix_fn(output)` before anything reads it.
        record: other modules whose every call is kept in `records`, in call order, as `(module, first positional
            input or None, output)`.
    """

    trunk: nn.Module | None
    heads: Sequence[nn.Module]
    shared_head_input: bool = False
    source_head: nn.Module | None = None
    stages: Sequence[nn.Module] = ()
    mix_stage: nn.Module | None = None
    mix_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    last: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    source_logits: torch.Tensor | None = None
    stage_outputs: list[torch.Tensor] = field(default_factory=list)
    record: Sequence[nn.Module] = ()
    records: list[tuple[nn.Module, Any, Any]] = field(default_factory=list)
    _head_inputs: dict[int, torch.Tensor] = field(default_factory=dict)

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.trunk, *self.heads, *self.stages, self.mix_stage, *self.record) if m is not None]

    def on_input(self, module: nn.Module, args: tuple) -> None:
        for index, head in enumerate(self.heads):
            if head is module:
                self._head_inputs[index] = args[0]
        if module in self.heads and len(self._head_inputs) == len(self.heads):
            features = [self._head_inputs[i] for i in range(len(self.heads))]
            self.pooled = features[0] if self.shared_head_input else torch.cat(features, dim=-1)
            if self.source_head is not None:
                self.source_logits = self.source_head(self.pooled)

    def on_output(self, module: nn.Module, args: tuple, output):
        if module is self.mix_stage:
            output = map_first_tensor(output, self.mix_fn)
        if any(stage is module for stage in self.stages):
            self.stage_outputs.append(first_tensor(output))
        if module is self.trunk:
            self.last = output["last_hidden_state"] if isinstance(output, dict) else output[0]
        if any(recorded is module for recorded in self.record):
            self.records.append((module, args[0] if args else None, output))
        return output


def _pre_hook(module: nn.Module, args: tuple) -> None:
    if _active and not recomputing():
        _active[-1].on_input(module, args)


def _hook(module: nn.Module, args: tuple, output):
    if recomputing():
        return None
    new = _active[-1].on_output(module, args, output) if _active else output
    for sink in getattr(module, _SINKS, ()):
        sink.append(new)
    return new if new is not output else None


def install_hooks(module: nn.Module) -> list[RemovableHandle]:
    """Register the capture hooks on `module` once (a copy made by `copy.deepcopy` keeps them, and copies of its
    sinks); return the new hooks' handles (none if it had them). The forward hook runs before any other, so that
    the hooks of others see a mixed stage output."""
    if getattr(module, _HOOKED, False):
        return []
    handles = [module.register_forward_pre_hook(_pre_hook), module.register_forward_hook(_hook, prepend=True)]
    setattr(module, _SINKS, [])
    setattr(module, _HOOKED, True)
    return handles


def remove_hooks(module: nn.Module, handles: list[RemovableHandle]) -> None:
    """Remove the hooks [`install_hooks`] registered on `module` (`handles`), with their sinks."""
    for handle in handles:
        handle.remove()
    delattr(module, _HOOKED)
    delattr(module, _SINKS)


@contextmanager
def capturing(capture: Capture, keep_hooks: bool = True) -> Iterator[Capture]:
    """Within the context, forward passes through the modules of `capture` fill it in. With `keep_hooks=False`, the
    hooks installed for it are removed at the end (a one-off pass: no hook left behind)."""
    installed = [(module, install_hooks(module)) for module in capture.modules()]
    _active.append(capture)
    try:
        yield capture
    finally:
        _active.pop()
        if not keep_hooks:
            for module, handles in installed:
                if handles:
                    remove_hooks(module, handles)


def record_outputs(module: nn.Module, sink: MutableSequence) -> None:
    """From now on, append every output of `module` to `sink` (`list.append`, a bounded `deque`...), whether or not
    a capture is in effect; a sink is added once."""
    install_hooks(module)
    sinks = module.__dict__.setdefault(_SINKS, [])
    if not any(known is sink for known in sinks):
        sinks.append(sink)


def stop_recording(module: nn.Module, sink: MutableSequence) -> None:
    """Stop appending the outputs of `module` to `sink` ([`record_outputs`])."""
    sinks = getattr(module, _SINKS, [])
    sinks[:] = [known for known in sinks if known is not sink]
