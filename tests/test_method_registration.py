"""A regulariser declares its hyperparameters once: adding one is one module (here, this file) and needs no edit
elsewhere. A toy regulariser registered here gets its command-line flag, its check, its model-card line and its
search space from its declaration alone; the registry refuses a taken name unless asked to replace it."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from transformers import HfArgumentParser

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.methods import (
    REGULARIZERS,
    BufferDict,
    BufferList,
    HyperParameter,
    Regularizer,
    method_hyperparameters,
    register_regularizer,
)
from smile_hf.methods.l2sp import L2SP
from smile_hf.methods.registry import declared_hyperparameters

from .testing_utils import random_image_dataset, source_and_student, training_device_args

TOY = "toy_pull"
TOY_WEIGHT = HyperParameter(
    "toy_weight", 0.5, "Toy: weight of the mean squared pooled feature.", low=0, high=10, search=(0.01, 1.0), log=True
)
TOY_POWER = HyperParameter("toy_power", 2, "Toy: power of the pooled features.", type=int, low=1, choices=None)


class ToyPull(Regularizer):
    """Pulls the pooled features towards 0: `toy_weight * mean(|f|^toy_power)`."""

    name = TOY
    title = "Toy pull"
    hyperparameters = (TOY_WEIGHT, TOY_POWER)

    def loss_terms(self, inputs):
        return {"toy": (self.toy_weight, inputs.student.pooled.float().abs().pow(self.toy_power).mean())}


@pytest.fixture
def toy_registered():
    register_regularizer(ToyPull)
    yield ToyPull
    REGULARIZERS.pop(TOY, None)


def parse(args_class, argv):
    (args,) = HfArgumentParser(args_class).parse_args_into_dataclasses(argv)
    return args


def base_argv(tmp_path):
    return ["--output_dir", str(tmp_path), "--report_to", "none", "--use_cpu", str(training_device_args()["use_cpu"])]


def test_toy_regulariser_gets_its_flag_check_and_card_line(toy_registered, tmp_path):
    assert "toy_weight" not in {f.name for f in fields(SmileTrainingArguments)}  # registered after the class
    args_class = SmileTrainingArguments.with_methods()
    assert issubclass(args_class, SmileTrainingArguments) and SmileTrainingArguments.with_methods() is args_class
    assert "Toy: weight of the mean squared pooled feature." in HfArgumentParser(args_class).format_help()

    args = parse(args_class, base_argv(tmp_path) + ["--method", "toy_pull+mixup", "--toy_weight", "0.25"])
    assert (args.regularizer, args.mixing, args.toy_weight, args.toy_power) == (TOY, "mixup", 0.25, 2)
    with pytest.raises(ValueError, match=re.escape("`toy_weight` must be in [0, 10], got 11.0.")):
        parse(args_class, base_argv(tmp_path) + ["--method", TOY, "--toy_weight", "11"])
    with pytest.raises(ValueError, match=re.escape("`toy_power` must be >= 1, got 0.")):
        args_class(output_dir=str(tmp_path), report_to="none", method=TOY, toy_power=0)

    assert method_hyperparameters(args) == {"method": "toy_pull+mixup", "toy_weight": 0.25, "toy_power": 2, "mixup_alpha": 0.2}
    assert ToyPull.from_args(args).toy_weight == 0.25


def test_toy_regulariser_trains_saves_and_writes_its_card_line(toy_registered, tmp_path):
    """Through the trainer: the term is logged, the arguments of the generated class are saved (pickled by the
    Trainer, and as JSON), and the card lists the toy hyperparameters with their values."""
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments.with_methods()(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), method=TOY, toy_weight=0.3,
        max_steps=2, per_device_train_batch_size=4, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(8))
    assert trainer.regularizer.toy_weight == 0.3
    trainer.train()
    assert any("loss_toy" in entry for entry in trainer.state.log_history)
    trainer.save_model()
    assert json.loads((tmp_path / "training_args.json").read_text())["toy_weight"] == 0.3
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "| `toy_weight` | 0.3 |" in card and "| `toy_power` | 2 |" in card


def test_config_module_names_no_hyperparameter_of_a_regulariser():
    source = (Path(__file__).resolve().parents[1] / "smile_hf" / "config.py").read_text()
    named = [name for name in declared_hyperparameters() if re.search(rf"\b{name}\b", source)]
    assert named == []


def test_a_taken_name_is_refused_unless_replaced(toy_registered):
    class Other(ToyPull):
        pass

    with pytest.raises(ValueError, match="'toy_pull' is already registered.*replace=True"):
        register_regularizer(Other)
    assert REGULARIZERS[TOY] is ToyPull
    assert register_regularizer(Other, replace=True) is Other and REGULARIZERS[TOY] is Other
    assert register_regularizer(replace=True)(ToyPull) is ToyPull and REGULARIZERS[TOY] is ToyPull


def test_conflicting_or_shadowing_declarations_are_refused(toy_registered):
    class Conflict(Regularizer):
        name = "toy_conflict"
        hyperparameters = (HyperParameter("toy_weight", 0.1, "Another toy weight."),)

    class Shadow(Regularizer):
        name = "toy_shadow"
        hyperparameters = (HyperParameter("title", 0.1, "Shadows the class attribute."),)

    with pytest.raises(ValueError, match="`toy_weight` of 'toy_conflict' differs from the one 'toy_pull' declares"):
        register_regularizer(Conflict)
    with pytest.raises(ValueError, match="`title` of 'toy_shadow' shadows an attribute"):
        register_regularizer(Shadow)
    assert "toy_conflict" not in REGULARIZERS and "toy_shadow" not in REGULARIZERS


def test_a_hyperparameter_named_like_a_training_argument_is_refused():
    class Clash(Regularizer):
        name = "toy_clash"
        hyperparameters = (HyperParameter("seed", 1, "Toy: a hyperparameter named like a training argument.", type=int),)

    register_regularizer(Clash)
    try:
        with pytest.raises(ValueError, match="'toy_clash' declares a hyperparameter `seed`, which is a training argument"):
            SmileTrainingArguments(output_dir="unused", report_to="none", method="toy_clash")
    finally:
        REGULARIZERS.pop("toy_clash")


def test_regulariser_built_from_explicit_hyperparameters():
    method = L2SP(l2sp_alpha=0.3)
    assert (method.l2sp_alpha, method.l2sp_beta) == (0.3, 0.01)  # the other one keeps its declared default
    with pytest.raises(TypeError, match="L2SP has no hyperparameter 'l2sp_gamma'"):
        L2SP(l2sp_gamma=1.0)
    with pytest.raises(ValueError, match=re.escape("`l2sp_alpha` must be >= 0, got -1.0.")):
        L2SP(l2sp_alpha=-1.0)
    with pytest.raises(ValueError, match=re.escape("`l2sp_alpha` must be a float, got 'x'.")):
        L2SP(l2sp_alpha="x")


@pytest.mark.parametrize(
    "kwargs, message",
    [  # the messages of the hand-written checks these declarations replace
        ({"reg_lambda": -1.0}, "`reg_lambda` must be >= 0, got -1.0."),
        ({"ema_decay": 1.5}, "`ema_decay` must be in [0, 1], got 1.5."),
        ({"delta_attention_batches": 0}, "`delta_attention_batches` must be >= 1, got 0."),
        ({"rifle_num_reinits": -1}, "`rifle_num_reinits` must be >= 0, got -1."),
        ({"final_finetune_fraction": 1.0}, "`final_finetune_fraction` must be in [0, 1), got 1.0."),
    ],
)
def test_declared_checks_keep_their_messages(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SmileTrainingArguments(output_dir="unused", report_to="none", **kwargs)


def test_search_spaces_are_valid_and_contain_the_defaults(toy_registered):
    assert ToyPull.search_space() == {"toy_weight": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}
    assert set(REGULARIZERS["smile"].search_space()) == {"reg_lambda", "aux_lambda", "cls_lambda", "ema_decay", "final_finetune_fraction"}
    for cls in REGULARIZERS.values():
        for hyperparameter in cls.hyperparameters:
            dimension = hyperparameter.search_dimension()
            if dimension is None or dimension["type"] == "categorical":
                continue
            low, high = dimension["low"], dimension["high"]
            hyperparameter.check(low), hyperparameter.check(high)  # both ends are valid values
            assert low < high and low <= hyperparameter.default <= high, hyperparameter.name
            assert not dimension["log"] or low > 0, hyperparameter.name


def test_a_hyperparameter_with_choices():
    norm = HyperParameter("toy_norm", "l2", "Toy: the norm.", type=str, choices=("l1", "l2"), search=("l1", "l2"))
    norm.check("l1")
    with pytest.raises(ValueError, match=re.escape("`toy_norm` must be one of ('l1', 'l2'), got 'l3'.")):
        norm.check("l3")
    assert norm.as_field().metadata == {"help": "Toy: the norm.", "choices": ["l1", "l2"]}
    assert norm.search_dimension() == {"type": "categorical", "choices": ["l1", "l2"]}
    with pytest.raises(ValueError, match="`toy_bad` must be >= 0, got -1"):  # a default outside the range
        HyperParameter("toy_bad", -1, "Toy: bad default.", type=int, low=0)


def test_regulariser_state_is_buffers_that_move_and_save():
    """L2-SP's starting point is a tree of buffers keyed by parameter name: `state_dict` keys are `w0.<name>`, `.to`
    moves them, and a fresh regulariser takes a saved state."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    method = L2SP()
    for name, p in model.named_parameters():
        method.w0[name] = p.detach().clone()
    state = method.state_dict()
    assert set(state) == {"w0.0.weight", "w0.0.bias"}
    assert torch.equal(state["w0.0.weight"], model[0].weight)
    method.to(torch.float64)
    assert method.w0["0.weight"].dtype == torch.float64
    restored = L2SP()
    restored.load_state_dict({k: v.clone() for k, v in state.items()})
    assert set(restored.w0.keys()) == {"0.weight", "0.bias"} and torch.equal(restored.w0["0.bias"], model[0].bias)
    with pytest.raises(ValueError, match="does not match this model's backbone"):
        restored.load_state_dict({"w0.other.weight": torch.zeros(2, 3)})


class _Computed(Regularizer):
    """Unregistered: one buffer registered as None (computed later, as Co-Tuning's relationship), a list and a dict
    (as DELTA's attention and L2-SP's starting point), all empty in a fresh instance."""

    name = "computed_state"

    def __init__(self):
        super().__init__()
        self.register_buffer("matrix", None)
        self.per_layer = BufferList()
        self.start = BufferDict()


def test_one_restore_path_creates_every_kind_of_missing_buffer():
    """A fresh regulariser takes a saved state whatever holds it (a `None` buffer, a `BufferList`, a `BufferDict`):
    shapes, dtypes and values as saved; a filled one is loaded in place (same tensors, new values)."""
    saved = _Computed()
    saved.matrix = torch.arange(6.0).reshape(2, 3)
    saved.per_layer.append(torch.ones(4, dtype=torch.float64))
    saved.per_layer.append(torch.full((2,), 3.0))
    saved.start["encoder.layer.0.weight"] = torch.randn(2, 2)
    state = {k: v.clone() for k, v in saved.state_dict().items()}
    fresh = _Computed()
    assert fresh.state_dict() == {}
    fresh.load_state_dict(state)
    restored = fresh.state_dict()
    assert set(restored) == set(state) == {"matrix", "per_layer.0", "per_layer.1", "start.encoder.layer.0.weight"}
    for key, value in state.items():
        assert restored[key].dtype == value.dtype and torch.equal(restored[key], value)
    held = fresh.per_layer[0]
    fresh.load_state_dict({k: v + 1 for k, v in state.items()})
    assert fresh.per_layer[0] is held and torch.equal(held, state["per_layer.0"] + 1)
    with pytest.raises(ValueError, match="not numbered 0, 1"):
        _Computed().load_state_dict({"per_layer.0": torch.ones(1), "per_layer.2": torch.ones(1)})
