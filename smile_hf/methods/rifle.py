# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""RIFLE: Backpropagation in Depth for Deep Transfer Learning through Re-Initializing the Fully-connected LayEr
(Li, Xiong, An, Xu, Dou; ICML 2020, arXiv 2007.03349).

No extra loss term: the new classifier is re-initialised `rifle_num_reinits` = n times during training, so that
the backbone keeps receiving large gradients from a head that has to be re-learnt. Training is cut into n + 1
equal periods; with T = `max_steps`, the head is re-initialised right after optimizer step

    s_i = round(i * T / (n + 1)),   i = 1..n,

(steps counted from 1; a step s_i <= 0 or >= T is dropped) and then keeps the last period, T / (n + 1) steps, to
converge: no re-initialisation ever happens near the end of training. This is the RIFLE reference
(lixingjian/RIFLE `train.py`: periods = re-inits + 1, re-init after epoch e when (e + 1) % (E // periods) == 0),
expressed in steps and without its re-initialisation after the very last epoch, which would throw the trained
head away. The default is one re-initialisation, at half of training.

A re-initialisation is PyTorch's default `nn.Linear` initialisation of the weight and the bias (the reference calls
`reset_parameters()`), drawn from a generator seeded by (`seed`, step) so that it is reproducible and identical on
every process. As in the reference, the optimizer state of the head (momentum) is left as it is.

Mixing does not interact with the schedule.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Regularizer
from .context import RegularizerContext
from .hyperparameters import HyperParameter
from .registry import register_regularizer


def reinit_steps(max_steps: int, num_reinits: int) -> list[int]:
    """The optimizer steps (1-based) after which the head is re-initialised: n evenly spaced period ends."""
    periods = num_reinits + 1
    steps = {round(i * max_steps / periods) for i in range(1, periods)}
    return sorted(s for s in steps if 0 < s < max_steps)


@torch.no_grad()
def reinitialize_linear(head: nn.Linear, seed: int) -> None:
    """Reset `head` in place to a fresh default `nn.Linear` initialisation drawn with `torch.manual_seed(seed)`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)
    head.weight.copy_(fresh.weight)
    if head.bias is not None:
        head.bias.copy_(fresh.bias)


@register_regularizer
class Rifle(Regularizer):
    """RIFLE (see the module docstring for the schedule and the reference)."""

    name = "rifle"
    title = "RIFLE"
    paper = (
        "Li, Xiong, An, Xu, Dou. RIFLE: Backpropagation in Depth for Deep Transfer Learning through Re- "
        "Initializing the Fully-connected LayEr. ICML 2020, arXiv 2007.03349."
    )
    description = (
        "RIFLE (Li et al., 2020) re-initialises the new head a few times during fine-tuning."
    )
    hyperparameters = (
        HyperParameter(
            "rifle_num_reinits", 1, "RIFLE: number of re-initialisations of the head.", type=int, low=0,
            search=(1, 3), doc="RIFLE: how many times the new head is re-initialised, evenly spaced over training.",
            reference="lixingjian/RIFLE train.py",
        ),
    )  # fmt: skip

    def on_step_end(self, context: RegularizerContext, step: int, max_steps: int) -> None:
        """Re-initialise the new head(s) if optimizer step `step` (1-based) of `max_steps` is a scheduled one."""
        if step in reinit_steps(max_steps, self.rifle_num_reinits):
            seed = int(np.random.SeedSequence([context.seed, step]).generate_state(1)[0])
            for offset, head in enumerate(context.adapter.classifiers(context.model)):  # two for distilled models
                reinitialize_linear(head, seed + offset)
