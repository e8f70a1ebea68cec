"""Every image-classification family of transformers: the parts the adapter derives, the source head copy, the clear
error of each unsupported type, and two training steps of SMILE and of DELTA + manifold mixup.

The fast suite trains one family per layout of the last feature map (`LAYOUT_REPRESENTATIVES`); the sweep over every
family is marked `slow`. timm tests skip when timm cannot be imported (it needs a torchvision built for the installed
torch, see docs/quickstart.md)."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch import nn
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
)

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import (
    UNSUPPORTED,
    BackboneAdapter,
    UnsupportedBackboneError,
    build_source_head_copy,
    unsupported_reason,
)

from .testing_utils import (
    ALL_FAMILIES,
    IMAGE_SIZE,
    LAYOUT_REPRESENTATIVES,
    TEST_DEVICE,
    TIMM_ARCHITECTURES,
    random_image_dataset,
    source_and_student,
    timm_model,
    tiny_model,
    training_device_args,
)


def _timm_importable() -> bool:
    try:
        import timm  # noqa: F401
    except (ImportError, RuntimeError):  # timm imports torchvision, which fails beside a torch it was not built for
        return False
    return True


requires_timm = pytest.mark.skipif(
    not _timm_importable(),
    reason="timm cannot be imported here (it needs a torchvision built for the installed torch; install .[timm] on a "
    "machine whose torch has a matching torchvision)",
)
TIMM_FAMILIES = [pytest.param(name, marks=requires_timm) for name in TIMM_ARCHITECTURES]
TOL = {"rtol": 1e-5, "atol": 1e-6}  # float32, same kernels on both sides


def test_every_mapped_type_is_covered_or_refused():
    """Each model type of transformers' image-classification mapping has a tiny test model, is timm_wrapper, or is
    refused with a reason."""
    tested = {family.removesuffix("_distilled") for family in ALL_FAMILIES} | {"timm_wrapper"}
    for model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        assert model_type in tested or unsupported_reason(model_type), model_type


@pytest.mark.parametrize("model_type", sorted(UNSUPPORTED) + ["dinat"])
def test_unsupported_type_gives_its_reason(model_type):
    if model_type == "dinat" and importlib.util.find_spec("natten") is not None:
        pytest.skip("natten is installed: DiNAT is attempted")
    model = nn.Linear(2, 2)
    model.config = type("Config", (), {"model_type": model_type})()
    with pytest.raises(UnsupportedBackboneError, match=rf"model type '{model_type}': .+") as error:
        BackboneAdapter(model)
    assert "\n" not in str(error.value)


def test_smile_trainer_refuses_an_unsupported_model_with_the_reason():
    import transformers as T

    config = T.ImageGPTConfig(vocab_size=17, n_positions=16, n_embd=8, n_layer=1, n_head=1, num_labels=3)
    model = T.ImageGPTForImageClassification(config)
    with pytest.raises(UnsupportedBackboneError, match=r"'imagegpt': it takes `input_ids`"):
        SmileTrainer(model=model, args=SmileTrainingArguments(output_dir="unused", report_to="none"))


def _check_parts(source: nn.Module, adapter: BackboneAdapter) -> None:
    """The source head copy, applied to the pooled feature, gives the source model's logits; the feature map is a map
    of at least 2 x 2; the backbone excludes exactly the classifiers."""
    source.eval()
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)).to(TEST_DEVICE)
    copy = build_source_head_copy(adapter, source)
    with torch.no_grad():
        out = adapter.forward(source, x, source_head=copy, output_hidden_states=True)
        logits = source(pixel_values=x)
    logits = logits["logits"] if "logits" in logits else logits[0]
    torch.testing.assert_close(out.source_logits, logits, **TOL)
    torch.testing.assert_close(out.logits, logits, **TOL)
    assert out.feature_map.dim() == 4 and out.feature_map.shape[-1] * out.feature_map.shape[-2] >= 4
    assert len(out.hidden_maps) == len(adapter.stages(source)) >= 1
    assert all(h.dim() == 4 for h in out.hidden_maps)
    head_params = {id(p) for p in adapter.head(source).parameters()}
    backbone = {id(p) for _, p in adapter.backbone_named_parameters(source)}
    assert backbone | head_params == {id(p) for p in source.parameters()} and not backbone & head_params


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_derived_parts(family):
    source = tiny_model(family, 7)
    _check_parts(source, BackboneAdapter(source))


@pytest.mark.parametrize("family", TIMM_FAMILIES)
def test_derived_parts_timm(family):
    source = timm_model(family, 7)
    adapter = BackboneAdapter(source)
    _check_parts(source, adapter)
    assert adapter.spec.num_special_tokens == getattr(source.timm_model, "num_prefix_tokens", 0)


def test_probe_fingerprints_stay_on_the_models_device():
    """The adapter's probing pass fingerprints each stage output on the model's device: a model already on an
    accelerator is probed there (the meta device stands in for one: mixing it with a CPU tensor raises, as CUDA does)."""
    from smile_hf.backbones.structure import _fingerprint

    output = torch.ones(2, 3, 4, 4, device="meta")
    fingerprint = _fingerprint(output)
    assert fingerprint.device == output.device and fingerprint.shape == (3,) and fingerprint.dtype == torch.float64
    torch.testing.assert_close(_fingerprint(torch.ones(2, 3)), torch.tensor([6.0, 6.0, 6.0], dtype=torch.float64))


def test_distilled_heads_are_both_new_heads(torch_device):
    """Distilled DeiT: both classifiers are reset and penalised, and the pooled feature is [CLS token || distillation
    token] (read from the base model's own output)."""
    model = tiny_model("deit_distilled", 3).eval()
    adapter = BackboneAdapter(model)
    assert [h for h in adapter.head(model)] == [model.cls_classifier, model.distillation_classifier]
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, device=torch_device)
    with torch.no_grad():
        tokens = model.deit(x).last_hidden_state
        pooled = adapter.forward(model, x).pooled
    torch.testing.assert_close(pooled, torch.cat([tokens[:, 0], tokens[:, 1]], dim=-1), **TOL)


def test_registered_spec_overrides_derivation():
    """A `BackboneSpec` given by hand wins over the derived parts: stages named module by module."""
    from smile_hf.backbones import BACKBONES, BackboneSpec, register_backbone

    model = tiny_model("resnet", 3)
    register_backbone("resnet", BackboneSpec(stages="resnet.encoder.stages.1,resnet.embedder"))
    try:
        stages = BackboneAdapter(model).stages(model)
    finally:
        del BACKBONES["resnet"]
    assert list(stages) == [model.resnet.encoder.stages[1], model.resnet.embedder]


def train_two_steps(family: str, method: str, tmp_path, **kwargs) -> list[dict]:
    source, student = source_and_student(family, num_source=7, num_target=3)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), save_strategy="no", method=method,
        max_steps=2,
        per_device_train_batch_size=2, logging_steps=1, disable_tqdm=True, final_finetune_fraction=0.0,
        delta_attention_batches=1, delta_attention_epochs=1, **kwargs,
    )  # fmt: skip
    trainer = SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(4))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for log in logs:
        assert all(math.isfinite(v) for k, v in log.items() if k.startswith("loss")), log
    return logs


METHOD_TERMS = {
    "smile": {"loss_main", "loss_aux", "loss_reg", "loss_cls"},
    "delta+manifold_mixup": {"loss_main", "loss_delta", "mix_lambda"},
}


def _train_and_check(family, method, tmp_path):
    logs = train_two_steps(family, method, tmp_path)
    assert METHOD_TERMS[method] <= set(logs[-1]), logs[-1]


@pytest.mark.parametrize("method", list(METHOD_TERMS))
@pytest.mark.parametrize("family", sorted(set(LAYOUT_REPRESENTATIVES.values())))
def test_layout_representative_trains(family, method, tmp_path):
    _train_and_check(family, method, tmp_path)


@pytest.mark.parametrize("method", list(METHOD_TERMS))
@pytest.mark.parametrize("family", TIMM_FAMILIES)
def test_timm_trains(family, method, tmp_path):
    _train_and_check(family, method, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHOD_TERMS))
@pytest.mark.parametrize("family", [f for f in ALL_FAMILIES if f not in LAYOUT_REPRESENTATIVES.values()])
def test_sweep_every_family_trains(family, method, tmp_path):
    _train_and_check(family, method, tmp_path)


def test_bf16_training_of_a_token_family(tmp_path):
    """Under bf16 autocast the loss terms stay finite (a family with registers, the student's and teacher's forward
    under the same autocast)."""
    logs = train_two_steps("dinov2_with_registers", "smile", tmp_path, bf16=True)
    assert METHOD_TERMS["smile"] <= set(logs[-1])
