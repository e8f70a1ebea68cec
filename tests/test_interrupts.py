"""A Ctrl-C or SIGTERM whose first `KeyboardInterrupt` Python drops (raised in a finaliser, or under a library's
`except BaseException`) still stops a `smile-hf` run: the handler of `smile_hf.interrupts` records the signal and
`SmileTrainer`'s `InterruptCallback` raises it again at the end of the next step."""

from __future__ import annotations

import os
import signal

import pytest

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.interrupts import handled_interrupts, pending

from .testing_utils import random_image_dataset, source_and_student, training_device_args


def tiny_trainer(tmp_path, steps: int) -> SmileTrainer:
    _, student = source_and_student("resnet", num_target=3)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", method="finetune", max_steps=steps, save_strategy="no",
        per_device_train_batch_size=4, disable_tqdm=True, **training_device_args(),
    )  # fmt: skip
    return SmileTrainer(model=student, args=args, train_dataset=random_image_dataset(8, num_labels=3))


def swallowed(signum: int) -> None:
    """Deliver `signum` to this process where its KeyboardInterrupt is swallowed (as in a finaliser)."""
    try:
        os.kill(os.getpid(), signum)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a call: the handler has run by its return
    except KeyboardInterrupt:
        pass


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_lost_interrupt_stops_training_at_the_end_of_the_next_step(tmp_path, signum):
    previous = signal.getsignal(signum)
    trainer = tiny_trainer(tmp_path, steps=5)
    with handled_interrupts():
        swallowed(signum)
        assert pending() == signal.Signals(signum).name  # dropped, but recorded
        with pytest.raises(KeyboardInterrupt, match=signal.Signals(signum).name):
            trainer.train()
        assert trainer.state.global_step == 1
    assert pending() is None and signal.getsignal(signum) is previous  # the previous handler is back


def test_without_the_handlers_the_callback_does_nothing(tmp_path):
    trainer = tiny_trainer(tmp_path, steps=3)
    trainer.train()
    assert trainer.state.global_step == 3
