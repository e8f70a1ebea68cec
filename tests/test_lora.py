"""SMILE with LoRA (peft): the teacher is an EMA adapter on the student's frozen base, not a second model; resume,
export, the other methods that need the source model, and the refusal of FSDP / ZeRO-3.

Tolerances: the teacher at step 0 and a fixed (DELTA) teacher are compared with the source model exactly (same
weights, same operations); the EMA with its formula at 1e-6; a resumed run with an uninterrupted one at rtol 1e-5 /
atol 1e-6 (as tests/test_checkpoints.py); exported models with the trained student at 1e-5.
"""

from __future__ import annotations

import copy
import os

import pytest
import safetensors.torch
import torch
from transformers import AutoModelForImageClassification, ViTImageProcessor

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import SOURCE_HEAD_NAME, unwrap_model
from smile_hf.method_state import METHOD_STATE_NAME
from smile_hf.sharding import (
    DATA_PARALLEL_ERROR,
    DEEPSPEED_RESUME_ERROR,
    ZERO3_ERROR,
    check_resume,
    check_sharding,
)

from .test_checkpoints import StopAt
from .testing_utils import IMAGE_SIZE, TEST_DEVICE, random_image_dataset, source_and_student, training_device_args

peft = pytest.importorskip("peft", reason="LoRA training needs the optional `peft` package (pip install smile_hf[peft])")

from smile_hf.lora import TEACHER_ADAPTER_NAME, save_adapter, save_merged  # noqa: E402  (after the skip)

TARGETS = {"resnet": ["convolution"], "vit": ["q_proj", "v_proj"]}
N = 3  # steps before the interruption in the resume test


def lora_config(family):
    return peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[family])


def make_trainer(output_dir, family="resnet", method="smile", seed=0, callbacks=(), **kwargs):
    source, student = source_and_student(family, seed=seed)
    options = dict(
        output_dir=str(output_dir), report_to="none", **training_device_args(), method=method, max_steps=2 * N,
        per_device_train_batch_size=4, optim="sgd", learning_rate=0.05, logging_steps=1, seed=42,
        save_strategy="no", ema_decay=0.8, ema_update_every=2, final_finetune_fraction=1 / 3, disable_tqdm=True,
    )  # fmt: skip
    options.update(kwargs)
    trainer = SmileTrainer(
        model=student, args=SmileTrainingArguments(**options), teacher_model=source,
        train_dataset=random_image_dataset(16), peft_config=lora_config(family), callbacks=list(callbacks),
        processing_class=ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
    )  # fmt: skip
    return trainer, source.eval()


def images(n=4, seed=1):
    return torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed)).to(TEST_DEVICE)


def adapter_tensors(trainer, name):
    return {
        n.replace(f".{name}.", "."): p.detach().clone()
        for n, p in unwrap_model(trainer.model).named_parameters()
        if name in n.split(".") and "modules_to_save" not in n
    }


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_teacher_is_the_source_model_and_shares_the_base(family, tmp_path):
    trainer, source = make_trainer(tmp_path, family)
    student, teacher = trainer.model, trainer.teacher
    x = images()
    # the student's training-mode forward changes the shared BatchNorm statistics: the teacher keeps the source's
    student.train()
    trainer.loss_fn.student_forward(student, x, None)
    with torch.no_grad():
        expected = source(pixel_values=x, output_hidden_states=True)
    out = teacher(x)
    torch.testing.assert_close(out.logits, expected.logits, rtol=0, atol=0)
    torch.testing.assert_close(out.feature_map, trainer.adapter.forward(source, x).feature_map, rtol=0, atol=0)
    assert student.training and all(m.training for m in student.modules())  # restored after the teacher's pass
    assert [n for n, p in student.named_parameters() if p.requires_grad and TEACHER_ADAPTER_NAME in n] == []

    # storage: every teacher tensor is the teacher adapter, the source head, the buffer copies, the counter; none of
    # them is a base weight (for these tiny models an r=4 adapter is not much smaller than the model itself)
    base_ptrs = {p.data_ptr() for n, p in student.named_parameters() if "lora_" not in n}
    state = teacher.state_dict()
    assert not base_ptrs & {t.data_ptr() for t in state.values()}
    adapter_numel = sum(p.numel() for p in adapter_tensors(trainer, TEACHER_ADAPTER_NAME).values())
    head_numel = sum(p.numel() for p in trainer.adapter.head(source).parameters())
    buffer_numel = sum(b.numel() for n, b in source.base_model.named_buffers() if b.is_floating_point())
    assert sum(t.numel() for t in state.values()) == adapter_numel + head_numel + buffer_numel + 1
    assert adapter_numel == sum(p.numel() for p in adapter_tensors(trainer, "default").values())
    model_numel = sum(p.numel() for p in source.parameters())
    assert sum(p.numel() for p in teacher.parameters()) == head_numel  # its only own module: the frozen source head
    # the model holds one base: its parameters are the source's plus two adapters and the heads
    student_numel = sum(p.numel() for p in student.parameters())
    trained_head = sum(p.numel() for p in trainer.adapter.head(student).parameters())
    aux = sum(p.numel() for p in getattr(unwrap_model(student), SOURCE_HEAD_NAME).parameters())
    assert student_numel == model_numel - head_numel + 2 * trained_head + 2 * adapter_numel + aux


def test_ema_of_the_adapter_follows_the_formula(tmp_path):
    trainer, _ = make_trainer(tmp_path)
    student = trainer.model
    with torch.no_grad():
        for n, p in student.named_parameters():
            if "lora_" in n and ".default." in n:
                p.add_(torch.randn_like(p))
    before = adapter_tensors(trainer, TEACHER_ADAPTER_NAME)
    target = adapter_tensors(trainer, "default")
    trainer.teacher.update(student)
    after = adapter_tensors(trainer, TEACHER_ADAPTER_NAME)
    assert after.keys() == target.keys() and len(after) > 0
    for name in after:
        torch.testing.assert_close(after[name], 0.8 * before[name] + 0.2 * target[name], rtol=0, atol=1e-6)
    assert int(trainer.teacher.num_updates) == 1


def full_state(trainer):
    state = {f"student.{k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    state.update({f"smile.{k}": v for k, v in trainer.method_state_dict().items()})
    return state


def test_resume_is_exact_and_exports_load(tmp_path, torch_device):
    reference, _ = make_trainer(tmp_path / "one_go")
    reference.train()
    expected = full_state(reference)
    assert int(reference.teacher.num_updates) == 2  # after steps 2 and 4; steps 5 and 6 are the final plain phase

    interrupted, _ = make_trainer(tmp_path / "run", save_strategy="steps", save_steps=N, callbacks=[StopAt(N)])
    interrupted.train()
    checkpoint = tmp_path / "run" / f"checkpoint-{N}"
    saved = safetensors.torch.load_file(str(checkpoint / METHOD_STATE_NAME))
    assert any(k.startswith("teacher.adapter.") for k in saved) and "source_head.weight" in saved
    # A new process loads the same pre-trained base; everything trained (adapter, heads, teacher adapter, BatchNorm
    # statistics of the base) is scrambled first, so that it has to come from the checkpoint.
    resumed, _ = make_trainer(tmp_path / "run", save_strategy="steps", save_steps=N)
    with torch.no_grad():
        for n, t in list(resumed.model.named_parameters()) + list(resumed.model.named_buffers()):
            if t.is_floating_point() and (t.requires_grad or TEACHER_ADAPTER_NAME in n or "running" in n):
                t.add_(torch.rand_like(t))
    resumed.train(resume_from_checkpoint=True)
    actual = full_state(resumed)
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}")

    # export: the merged model is a plain checkpoint loadable by the pipeline; the adapter alone loads on the base
    student = reference.model.eval()
    x = images()
    with torch.no_grad():
        expected_logits = student(pixel_values=x).logits
    save_merged(reference, str(tmp_path / "merged"))
    assert reference.teacher is not None and TEACHER_ADAPTER_NAME in student.peft_config  # the trainer's model kept
    merged = AutoModelForImageClassification.from_pretrained(str(tmp_path / "merged")).to(torch_device).eval()
    assert not any(SOURCE_HEAD_NAME in k or "lora_" in k for k in merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=x).logits, expected_logits, rtol=1e-5, atol=1e-5)
    from transformers import pipeline

    classifier = pipeline("image-classification", model=str(tmp_path / "merged"), device=torch_device)
    assert len(classifier(torch.rand(3, IMAGE_SIZE, IMAGE_SIZE).mul(255).byte().permute(1, 2, 0).numpy(), top_k=3)) == 3

    # the adapter alone (a ViT: no BatchNorm statistics outside the adapter) loads on the base it names
    vit, _ = make_trainer(tmp_path / "vit", "vit", max_steps=2)
    vit.train()
    base_dir = tmp_path / "base"
    _, base = source_and_student("vit")
    base.save_pretrained(str(base_dir))
    unwrap_model(vit.model).config.name_or_path = str(base_dir)  # as if loaded from there
    save_adapter(vit, str(tmp_path / "adapter"))
    files = set(os.listdir(tmp_path / "adapter"))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "preprocessor_config.json"} <= files
    assert TEACHER_ADAPTER_NAME not in files
    assert f"base_model: {base_dir}" in (tmp_path / "adapter" / "README.md").read_text()
    loaded = peft.PeftModel.from_pretrained(AutoModelForImageClassification.from_pretrained(str(base_dir)),
                                            str(tmp_path / "adapter")).to(torch_device).eval()  # fmt: skip
    with torch.no_grad():
        expected_logits = vit.model.eval()(pixel_values=x).logits
        torch.testing.assert_close(loaded(pixel_values=x).logits, expected_logits, rtol=1e-5, atol=1e-5)


def test_methods_that_need_the_source_model(tmp_path):
    # DELTA: the fixed teacher is the base with the adapters off, the source model exactly, even after training
    trainer, source = make_trainer(tmp_path / "delta", method="delta", max_steps=2, delta_attention_batches=1,
                                   delta_attention_epochs=1)  # fmt: skip
    assert trainer.teacher.adapter_name is None and TEACHER_ADAPTER_NAME not in trainer.model.peft_config
    trainer.train()
    assert any(p.abs().sum() > 0 for n, p in trainer.model.named_parameters() if "lora_B.default" in n)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(trainer.teacher(x).logits, source(pixel_values=x).logits, rtol=0, atol=0)

    # L2-SP on the adapter's deviation: 1/2 sum ||theta - theta_0||^2 over the LoRA tensors
    trainer, _ = make_trainer(tmp_path / "l2sp", method="l2sp", max_steps=2)
    start = adapter_tensors(trainer, "default")
    trainer.train()
    now = adapter_tensors(trainer, "default")
    params = {n: p for n, p in trainer.adapter.backbone_named_parameters(trainer.model) if p.requires_grad}
    assert len(params) == len(start) > 0
    expected = 0.5 * sum((now[n] - start[n]).pow(2).sum() for n in start)
    torch.testing.assert_close(trainer.regularizer.loss_terms(_inputs(trainer))["sp"][1], expected, rtol=1e-5, atol=1e-7)

    # Co-Tuning trains the attached source head next to the adapter
    trainer, _ = make_trainer(tmp_path / "cotuning", method="cotuning", max_steps=2)
    head = getattr(unwrap_model(trainer.model), SOURCE_HEAD_NAME)
    before = head.weight.detach().clone()
    trainer.train()
    assert not torch.equal(head.weight, before) and trainer.regularizer.relationship is not None


def _inputs(trainer):
    from smile_hf.methods import LossInputs

    x = images()
    out = trainer.loss_fn.student_forward(trainer.model, x, None)
    labels = torch.zeros(4, dtype=torch.long, device=x.device)
    return LossInputs(x, labels, None, out, None, unwrap_model(trainer.model), trainer.adapter)


def test_a_peft_model_is_accepted_and_its_head_must_be_trained(tmp_path):
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", **training_device_args(), max_steps=1)
    config = lora_config("resnet")
    config.modules_to_save = ["classifier.1"]
    wrapped = peft.get_peft_model(copy.deepcopy(student), config)
    trainer = SmileTrainer(model=wrapped, args=args, teacher_model=source, train_dataset=random_image_dataset(8))
    assert trainer.model is wrapped and trainer.teacher.adapter_name == TEACHER_ADAPTER_NAME
    frozen_head = peft.get_peft_model(copy.deepcopy(student), lora_config("resnet"))
    with pytest.raises(ValueError, match="modules_to_save=\\['classifier.1'\\]"):
        SmileTrainer(model=frozen_head, args=args, teacher_model=source)
    with pytest.raises(ValueError, match="already a PeftModel"):
        SmileTrainer(model=wrapped, args=args, teacher_model=source, peft_config=config)
    # a student whose base is not the source model cannot have a shared-base teacher
    other, _ = source_and_student("resnet", seed=3)
    with pytest.raises(ValueError, match="frozen base weights differ"):
        SmileTrainer(model=copy.deepcopy(student), args=args, teacher_model=other, peft_config=lora_config("resnet"))


def test_zero3_is_refused_with_one_clear_error(tmp_path, monkeypatch):
    """ZeRO-3 is refused pointing to FSDP2 (whose refusals are tested in tests/test_fsdp.py)."""
    # DeepSpeed is not installed here: ZeRO-3 is recognised from `accelerate launch`'s environment or the arguments
    plain = SmileTrainingArguments(output_dir=str(tmp_path), **training_device_args())
    check_sharding(plain)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(ValueError) as error:
        check_sharding(plain)
    assert str(error.value) == ZERO3_ERROR and "--fsdp_version 2" in ZERO3_ERROR

    class Zero3Config:
        def is_zero3(self):
            return True

    class StubArgs:
        fsdp, deepspeed, hf_deepspeed_config = "", "ds_config.json", Zero3Config()

    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    with pytest.raises(ValueError, match="ZeRO-3"):
        check_sharding(StubArgs())

    class DeepSpeedTrainer:
        is_deepspeed_enabled, args = True, StubArgs()

    with pytest.raises(ValueError) as error:
        check_resume(DeepSpeedTrainer(), "checkpoint-3")
    assert str(error.value) == DEEPSPEED_RESUME_ERROR
    check_resume(DeepSpeedTrainer(), None)  # training from scratch is not a resume


def test_data_parallel_is_refused(tmp_path):
    """One process seeing two GPUs: the Trainer would wrap the model in nn.DataParallel (`parallel_mode` is
    NOT_DISTRIBUTED, read from the GPU count the arguments found), which the adapter's hooks cannot follow."""
    args = SmileTrainingArguments(output_dir=str(tmp_path), **training_device_args())
    check_sharding(args)
    args._n_gpu = 2  # what _setup_devices finds on a machine with two visible GPUs and no launcher
    with pytest.raises(ValueError) as error:
        check_sharding(args)
    assert str(error.value) == DATA_PARALLEL_ERROR.format(n_gpu=2) and "--nproc_per_node 2" in str(error.value)
