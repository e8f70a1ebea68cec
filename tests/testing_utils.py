"""Tiny models of every supported family, built from configs (no download), for the tests; and the device the tests
run on (`TEST_DEVICE`, chosen by the environment variable `SMILE_HF_TEST_DEVICE`)."""

from __future__ import annotations

import copy
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import transformers as T
from torch import nn

from smile_hf.backbones import BackboneAdapter

REPO_ROOT = Path(__file__).resolve().parents[1]


def subprocess_env(**variables: str) -> dict[str, str]:
    """The environment of a child Python process that imports this checkout: this process's environment with
    `variables` set and the repository root put first on `PYTHONPATH`, ahead of what `PYTHONPATH` already holds (the
    packages found there stay importable in the child)."""
    inherited = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    return {**os.environ, **variables, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *inherited])}


# ---------------------------------------------------------------------------------------------------------------------
# The test device
# ---------------------------------------------------------------------------------------------------------------------

DEVICE_VARIABLE = "SMILE_HF_TEST_DEVICE"


def available_accelerator() -> tuple[str | None, int]:
    """(device type, number of devices) of this machine's accelerator, e.g. `("cuda", 2)`; `(None, 0)` without one."""
    if not torch.accelerator.is_available():
        return None, 0
    return torch.accelerator.current_accelerator().type, torch.accelerator.device_count()


def resolve_test_device(value: str | None, accelerator: tuple[str | None, int] | None = None) -> str:
    """The device the tests run on, from the value of `SMILE_HF_TEST_DEVICE`: `"cpu"` when unset or empty, else
    `"<type>:0"` for a device of this machine's accelerator (`cuda`, `cuda:0`; `accelerator` is `(type, count)`,
    by default `available_accelerator()`). Raises ValueError, naming the variable, for a value that is no torch
    device, a device this machine does not have, or a device index other than 0: a Trainer in one process always
    trains on device 0 (transformers' choice), so another GPU is chosen with `CUDA_VISIBLE_DEVICES` instead."""
    text = (value or "").strip()
    if not text:
        return "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{DEVICE_VARIABLE}={value!r} is not a torch device ({error}); use cpu, cuda or cuda:0") from None
    if device.type == "cpu":
        return "cpu"
    kind, count = available_accelerator() if accelerator is None else accelerator
    if device.type != kind or count < 1:
        here = f"{count} {kind} device(s)" if kind else "no accelerator"
        raise ValueError(f"{DEVICE_VARIABLE}={value!r}: this machine has no {device.type} device ({here})")
    index = 0 if device.index is None else device.index
    if index >= count:
        raise ValueError(f"{DEVICE_VARIABLE}={value!r}: this machine has {count} {kind} device(s) (0..{count - 1})")
    if index != 0:
        raise ValueError(
            f"{DEVICE_VARIABLE}={value!r}: the Trainer of a single process always trains on {kind}:0; to test on "
            f"another device, make it the only visible one (CUDA_VISIBLE_DEVICES={index}) and set {DEVICE_VARIABLE}={kind}"
        )
    return f"{kind}:0"


TEST_DEVICE: str = resolve_test_device(os.environ.get(DEVICE_VARIABLE))
"""The device of the tests' models and tensors: "cpu" (the default), or e.g. "cuda:0" with `SMILE_HF_TEST_DEVICE=cuda`.
The `torch_device` fixture (tests/conftest.py) gives the same value; tests/conftest.py turns a bad value into a
usage error at the start of the session."""

ON_ACCELERATOR = TEST_DEVICE != "cpu"


def training_device_args(device: str | None = None) -> dict[str, bool]:
    """The `SmileTrainingArguments` keywords that make a Trainer train on `device` (default `TEST_DEVICE`):
    `use_cpu=True` only for the CPU; on an accelerator the Trainer moves the model to device 0 itself."""
    return {"use_cpu": torch.device(TEST_DEVICE if device is None else device).type == "cpu"}


def script_device_args(device: str | None = None) -> list[str]:
    """The same, as command-line arguments of examples/run_smile.py (or any script parsing `SmileTrainingArguments`):
    without them a script trains on the accelerator whenever the machine has one."""
    return ["--use_cpu", str(training_device_args(device)["use_cpu"])]


def requires_a_device_per_rank(ranks: int) -> pytest.MarkDecorator:
    """Skips a test of `ranks` processes on an accelerator with fewer than `ranks` devices (DDP puts each rank on its
    own device). On the CPU the ranks share the machine (gloo): never skipped."""
    count = available_accelerator()[1] if ON_ACCELERATOR else ranks
    return pytest.mark.skipif(
        count < ranks, reason=f"{ranks} processes on {TEST_DEVICE} need {ranks} devices; this machine has {count}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------------------------------

IMAGE_SIZE = 64  # large enough that every family's last feature map is at least 2 x 2

VIT_SIZES = {
    "image_size": IMAGE_SIZE, "patch_size": 16, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 32,
}  # fmt: skip
"""A 2-layer, width-16 ViT: 4 x 4 patches of 16 pixels."""


def _vit_like(config_class, **kwargs):
    """A 2-layer, width-16 ViT-like config (4 x 4 patches of 16 pixels)."""
    return lambda n: config_class(num_labels=n, **VIT_SIZES, **kwargs)


def _dual_tower(config_class, **vision):
    """A CLIP-like config: a tiny vision tower (and the smallest text tower the config accepts)."""
    text = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 99}
    return lambda n: config_class(vision_config={**VIT_SIZES, **vision}, text_config=text, num_labels=n)


def _swin_like(config_class, **kwargs):
    return lambda n: config_class(
        image_size=IMAGE_SIZE, patch_size=4, embed_dim=8, depths=[1, 1], num_labels=n, **kwargs
    )


def _pvt_like(config_class, **kwargs):
    return lambda n: config_class(
        num_encoder_blocks=2, depths=[1, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
        num_labels=n, **kwargs,
    )  # fmt: skip


TINY_CONFIGS = {
    "resnet": lambda n: T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=n),
    "regnet": lambda n: T.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8, num_labels=n),
    "bit": lambda n: T.BitConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_groups=2, num_labels=n),
    "convnext": lambda n: T.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=n),
    "convnextv2": lambda n: T.ConvNextV2Config(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=n),
    "vit": _vit_like(T.ViTConfig),
    "vit_msn": _vit_like(T.ViTMSNConfig),
    "deit": _vit_like(T.DeiTConfig),
    "deit_distilled": _vit_like(T.DeiTConfig),
    "beit": _vit_like(T.BeitConfig, use_mean_pooling=True),
    "data2vec-vision": _vit_like(T.Data2VecVisionConfig),
    "ijepa": _vit_like(T.IJepaConfig),
    "dinov2": _vit_like(T.Dinov2Config),
    "dinov2_with_registers": _vit_like(T.Dinov2WithRegistersConfig, num_register_tokens=2),
    "clip": _dual_tower(T.CLIPConfig, projection_dim=8),
    "metaclip_2": _dual_tower(T.MetaClip2Config, projection_dim=8),
    "siglip": _dual_tower(T.SiglipConfig),
    "swin": _swin_like(T.SwinConfig, num_heads=[1, 2], window_size=4),
    "donut-swin": _swin_like(T.DonutSwinConfig, num_heads=[1, 2], window_size=4),
    "swinv2": _swin_like(T.Swinv2Config, num_heads=[1, 2], window_size=4),
    "focalnet": _swin_like(T.FocalNetConfig, focal_levels=[2, 2], focal_windows=[3, 3]),
    "cvt": lambda n: T.CvtConfig(
        embed_dim=[8, 16], num_heads=[1, 2], depth=[1, 2],  # depth[i] > i: CvT indexes its drop-path rates by stage
        patch_sizes=[7, 3], patch_stride=[4, 2], patch_padding=[2, 1], mlp_ratio=[2.0, 2.0],
        attention_drop_rate=[0.0, 0.0], drop_rate=[0.0, 0.0], drop_path_rate=[0.0, 0.0], qkv_bias=[True, True],
        cls_token=[False, True], qkv_projection_method=["dw_bn", "dw_bn"], kernel_qkv=[3, 3], padding_kv=[1, 1],
        stride_kv=[2, 2], padding_q=[1, 1], stride_q=[1, 1], num_labels=n,
    ),
    "efficientnet": lambda n: T.EfficientNetConfig(
        width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128, image_size=IMAGE_SIZE, num_labels=n
    ),
    "hgnet_v2": lambda n: T.HGNetV2Config(
        stem_channels=[3, 8, 8], stage_in_channels=[8, 16], stage_mid_channels=[8, 8], stage_out_channels=[16, 16],
        stage_num_blocks=[1, 1], stage_downsample=[False, True], stage_light_block=[False, False],
        stage_kernel_size=[3, 3], stage_numb_of_layers=[1, 1], hidden_sizes=[16, 16], depths=[1, 1], num_labels=n,
    ),
    "hiera": lambda n: T.HieraConfig(
        image_size=[IMAGE_SIZE, IMAGE_SIZE], embed_dim=8, depths=[1, 1], num_heads=[1, 2], patch_stride=[4, 4],
        masked_unit_size=[8, 8], query_stride=[2, 2], num_query_pool=1, mlp_ratio=2.0, num_labels=n,
    ),
    "levit": lambda n: T.LevitConfig(
        image_size=IMAGE_SIZE, hidden_sizes=[16, 24], num_attention_heads=[1, 2], depths=[1, 1], key_dim=[8, 8],
        drop_path_rate=0, mlp_ratio=[2, 2], attention_ratio=[2, 2], down_ops=[["Subsample", 8, 1, 2, 2, 2]],
        num_labels=n,
    ),
    "mobilenet_v1": lambda n: T.MobileNetV1Config(depth_multiplier=0.25, image_size=IMAGE_SIZE, num_labels=n),
    "mobilenet_v2": lambda n: T.MobileNetV2Config(depth_multiplier=0.25, image_size=IMAGE_SIZE, num_labels=n),
    "mobilevit": lambda n: T.MobileViTConfig(
        image_size=IMAGE_SIZE, hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 8, 16, 16, 16, 32],
        num_attention_heads=2, num_labels=n,
    ),
    "mobilevitv2": lambda n: T.MobileViTV2Config(image_size=IMAGE_SIZE, width_multiplier=0.25, num_labels=n),
    "poolformer": lambda n: T.PoolFormerConfig(
        hidden_sizes=[8, 16], depths=[1, 1], num_encoder_blocks=2, patch_sizes=[7, 3], strides=[4, 2],
        padding=[2, 1], num_labels=n,
    ),
    "pp_lcnet": lambda n: T.PPLCNetConfig(scale=0.25, num_labels=n),
    "pvt": _pvt_like(
        T.PvtConfig, image_size=IMAGE_SIZE, sequence_reduction_ratios=[2, 1], patch_sizes=[4, 2], strides=[4, 2]
    ),
    "pvt_v2": _pvt_like(T.PvtV2Config, image_size=IMAGE_SIZE, sr_ratios=[2, 1], patch_sizes=[7, 3], strides=[4, 2]),
    "segformer": _pvt_like(
        T.SegformerConfig, sr_ratios=[2, 1], patch_sizes=[7, 3], strides=[4, 2], decoder_hidden_size=16
    ),
    "swiftformer": lambda n: T.SwiftFormerConfig(depths=[1, 1, 1, 1], embed_dims=[8, 8, 16, 16], num_labels=n),
    "textnet": lambda n: T.TextNetConfig(
        stem_out_channels=8, conv_layer_kernel_sizes=[[[3, 3]], [[3, 3]]], conv_layer_strides=[[2], [2]],
        hidden_sizes=[8, 16, 16], num_labels=n,
    ),
}  # fmt: skip
TINY_CONFIGS["levit_distilled"] = TINY_CONFIGS["levit"]
MODEL_CLASSES = {
    "deit": T.DeiTForImageClassification,
    "deit_distilled": T.DeiTForImageClassificationWithTeacher,
    "levit": T.LevitForImageClassification,
    "levit_distilled": T.LevitForImageClassificationWithTeacher,
}
"""Classes for the families whose model type maps to two classifiers (AutoModel's `from_config` cannot choose)."""
FAMILIES = ["convnext", "deit", "efficientnet", "mobilenet_v2", "resnet", "swin", "vit"]
"""The families every method and mixing strategy is trained on in the fast suite."""
ALL_FAMILIES = sorted(TINY_CONFIGS)
"""Every supported image-classification family of transformers (timm_wrapper apart: see `timm_model`)."""
LAYOUT_REPRESENTATIVES = {
    "cnn_map": "resnet",
    "cls_tokens": "deit_distilled",
    "registers": "dinov2_with_registers",
    "no_cls_tokens": "siglip",
    "hierarchical": "swinv2",
}
"""One fast family per layout of the last feature map (timm has its own skipped tests)."""


def tiny_model(family: str, num_labels: int, seed: int = 0, device: str | None = None) -> nn.Module:
    """A randomly initialised tiny image classifier of `family`, on `device` (default `TEST_DEVICE`). The weights are
    drawn on the CPU, so that they are the same whatever the device."""
    torch.manual_seed(seed)
    config = TINY_CONFIGS[family](num_labels)
    if family in MODEL_CLASSES:
        model = MODEL_CLASSES[family](config)
    else:
        model = T.AutoModelForImageClassification.from_config(config)
    return model.to(TEST_DEVICE if device is None else device)


TIMM_ARCHITECTURES = {
    "timm_cnn": ("resnet10t", {}),
    "timm_vit": ("vit_tiny_patch16_224", {"img_size": IMAGE_SIZE, "depth": 2, "reg_tokens": 1}),
}
"""timm architectures (and `create_model` arguments) of the timm_wrapper tests: a CNN and a ViT with a register."""


def timm_model(family: str, num_labels: int, seed: int = 0, device: str | None = None) -> nn.Module:
    """A randomly initialised `TimmWrapperForImageClassification` of a [`TIMM_ARCHITECTURES`] entry (needs timm), on
    `device` (default `TEST_DEVICE`; weights drawn on the CPU)."""
    torch.manual_seed(seed)
    architecture, model_args = TIMM_ARCHITECTURES[family]
    config = T.TimmWrapperConfig(architecture=architecture, num_labels=num_labels, model_args=model_args)
    return T.TimmWrapperForImageClassification(config).to(TEST_DEVICE if device is None else device)


def source_and_student(family: str, num_source: int = 7, num_target: int = 3, seed: int = 0, device: str | None = None):
    """A 'pre-trained' source model and a student with the same backbone and a new head of `num_target` classes, both
    on `device` (default `TEST_DEVICE`)."""
    build = timm_model if family in TIMM_ARCHITECTURES else tiny_model
    source = build(family, num_source, seed, device)
    student = build(family, num_target, seed + 1, device)
    adapter = BackboneAdapter(student)
    heads = tuple(f"{path}." for path in adapter.spec.head.split(","))
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith(heads)}
    assert not student.load_state_dict(backbone, strict=False).unexpected_keys
    assert adapter.head(student).out_features == num_target
    return source, student


def random_image_dataset(num: int = 32, num_labels: int = 3, size: int = IMAGE_SIZE, seed: int = 0):
    """A `datasets.Dataset` of random pixel_values / labels in torch format (CPU tensors, as a DataLoader gives them:
    the Trainer moves each batch to its device; a test feeding them to a model itself moves them)."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(num, 3, size, size, generator=g)
    labels = torch.randint(0, num_labels, (num,), generator=g)
    return Dataset.from_dict({"pixel_values": pixel_values.numpy(), "labels": labels.numpy()}).with_format("torch")


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def finish_rank() -> None:
    """End one rank of a test's multi-process run once its results are written: destroy the process group, flush,
    and leave without the interpreter's teardown. At the oldest supported versions (datasets 3.0, accelerate 1.7-1.10,
    transformers 5.23) a rank sometimes aborts in a C++ destructor at exit ("terminate called without an active
    exception") after all its work is done; the tests check that work, not the teardown."""
    from smile_hf.distributed import shutdown

    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


LOSS_TERMS = {
    "l2sp": {"loss_sp", "loss_head"}, "delta": {"loss_delta"}, "bss": {"loss_bss"}, "rifle": set(),
    "cotuning": {"loss_cotuning"}, "smile": {"loss_aux", "loss_reg", "loss_cls"},
    "mixup": {"mix_lambda"}, "cutmix": {"mix_lambda"}, "manifold_mixup": {"mix_lambda"},
}  # fmt: skip
"""What each part of a method spec logs besides `loss_main`."""


def logged_terms(method: str) -> set[str]:
    """The loss terms a method spec (`"delta+manifold_mixup"`) must log besides `loss_main`: its parts' together."""
    return set().union(*(LOSS_TERMS[part] for part in method.split("+")))


def assert_logs_terms(trainer, method: str, steps: int = 2) -> None:
    """`trainer` logged `steps` training steps, each with `loss_main` and the method's terms ([`logged_terms`]),
    every loss finite."""
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == steps
    for log in logs:
        assert logged_terms(method) | {"loss_main"} <= set(log), log
        assert all(math.isfinite(v) for k, v in log.items() if k.startswith("loss")), log
