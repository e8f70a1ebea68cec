"""Every baseline and mixing strategy on text classifiers (tiny configs, two steps), what is refused for text and
why, SMILE without a source head, evaluation, and the LoRA teacher."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import transformers as T

from smile_hf import BackboneAdapter, SmileTrainer, SmileTrainingArguments, UnsupportedBackboneError
from smile_hf.backbones import SOURCE_HEAD_NAME
from smile_hf.lora import LoraEmaTeacher
from smile_hf.mixing import Mix
from smile_hf.text import masked_attention_weighted_distance

from .testing_utils import assert_logs_terms
from .text_testing import (
    TEXT_FAMILIES,
    pad_collator,
    pad_id,
    text_source_and_student,
    tiny_text_model,
    token_batch,
    token_dataset,
    token_trainer,
)

# the methods trained (the loss terms each must log: `testing_utils.logged_terms`)
METHODS = ("l2sp", "delta", "bss", "rifle", "cotuning", "mixup", "manifold_mixup", "l2sp+mixup", "delta+manifold_mixup",
           "cotuning+mixup", "smile+manifold_mixup")  # fmt: skip
NEEDS_LAYERS = ("delta", "manifold_mixup", "delta+manifold_mixup", "smile+manifold_mixup")
"""Methods that need one module per layer: refused for ALBERT, whose layers are shared across depth."""


def text_args(tmp_path, method, **kwargs):
    return SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no", method=method, max_steps=2,
        per_device_train_batch_size=2, logging_steps=1, disable_tqdm=True, final_finetune_fraction=0.0,
        delta_attention_batches=1, delta_attention_epochs=1, rifle_num_reinits=1, seed=0, **kwargs,
    )  # fmt: skip


def text_trainer(tmp_path, method, family="bert", source=None, student=None, **kwargs):
    if student is None:
        source, student = text_source_and_student(family)
    return token_trainer(
        student, source, text_args(tmp_path, method, **kwargs), 4, eval_dataset=token_dataset(4, seed=1)
    )


FAST_FAMILIES = ("bert", "gpt2")
"""Every method on an encoder and a decoder in the fast suite; on the other families (and ALBERT's refusals) it is
`slow` (about 2 s a run on two CPU cores)."""


def family_method_cases():
    cases = []
    for family in TEXT_FAMILIES:
        for method in METHODS:
            fast = family in FAST_FAMILIES or (family == "albert" and method in NEEDS_LAYERS)  # a refusal is quick
            cases.append(pytest.param(family, method, marks=() if fast else pytest.mark.slow, id=f"{family}-{method}"))
    return cases


@pytest.mark.parametrize("family,method", family_method_cases())
def test_method_trains_on_text_family(family, method, tmp_path):
    if family == "albert" and method in NEEDS_LAYERS:
        with pytest.raises(UnsupportedBackboneError, match="shares its layers across depth"):
            text_trainer(tmp_path, method, family)
        return
    trainer = text_trainer(tmp_path, method, family)
    trainer.train()
    assert_logs_terms(trainer, method)


def test_cutmix_is_refused_for_text(tmp_path):
    with pytest.raises(ValueError, match="CutMix has no analogue for text"):
        text_trainer(tmp_path, "smile+cutmix")


def test_unsupported_text_family_is_refused():
    config = T.XLNetConfig(vocab_size=99, d_model=32, n_layer=2, n_head=2, d_inner=37, num_labels=3)
    with pytest.raises(UnsupportedBackboneError, match="text model type 'xlnet'.*supported text families are bert"):
        BackboneAdapter(T.XLNetForSequenceClassification(config))


def test_evaluation_logs_the_terms_of_text_batches(tmp_path):
    trainer = text_trainer(tmp_path, "smile")
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_loss_main", "eval_loss_reg", "eval_loss_aux", "eval_loss_cls"} <= set(metrics)
    assert math.isclose(metrics["eval_loss"], metrics["eval_loss_main"], rel_tol=1e-5)
    # unmixed and with the unchanged teacher at the start, L_reg compares the student with the EMA teacher: finite
    assert math.isfinite(metrics["eval_loss_reg"])


def test_smile_without_a_source_head_turns_l_aux_off(tmp_path, caplog):
    """A pre-training checkpoint (a `BertModel`, no classification head): SMILE trains with L_reg and without L_aux,
    saying so once; Co-Tuning, which is nothing without the source head, is refused."""
    source, student = text_source_and_student("bert")
    source.base_model.save_pretrained(tmp_path / "encoder")  # config.architectures = ["BertModel"]
    with caplog.at_level(logging.WARNING, logger="smile_hf.text_setup"):
        trainer = text_trainer(tmp_path / "run", "smile", source=str(tmp_path / "encoder"), student=student)
    assert [r.message for r in caplog.records if "L_aux is off" in r.message]
    assert not hasattr(student, SOURCE_HEAD_NAME)
    trainer.train()
    log = next(h for h in trainer.state.log_history if "loss" in h)
    assert {"loss_reg", "loss_cls"} <= set(log) and "loss_aux" not in log
    with pytest.raises(ValueError, match="needs the source checkpoint's trained classification head"):
        text_trainer(tmp_path / "co", "cotuning", source=str(tmp_path / "encoder"), student=tiny_text_model("bert", 3))


def test_text_delta_distance_by_hand():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 4, 3, generator=generator), torch.randn(2, 4, 3, generator=generator)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    attention = torch.tensor([0.2, 0.3, 0.5])
    expected = 0.0
    for b in range(2):
        kept = [t for t in range(4) if mask[b, t]]
        for c in range(3):
            squares = sum((student[b, t, c] - teacher[b, t, c]).item() ** 2 for t in kept)
            expected += attention[c].item() * squares / len(kept)
    value = masked_attention_weighted_distance(student, teacher, mask, attention)
    assert math.isclose(value.item(), expected, rel_tol=1e-5)


def test_manifold_mixup_of_the_last_layer_mixes_its_outputs():
    """Manifold mixup at the output of the last layer: the student's last hidden states equal the mix of the rows of
    one unmixed pass run with the union masks (every layer of a mixed pass attends with its row's union mask)."""
    model = tiny_text_model("bert", 3).eval()
    adapter = BackboneAdapter(model)
    batch, perm, lam = token_batch([5, 3, 7, 2]), torch.tensor([2, 0, 3, 1]), 0.7
    mix = Mix("manifold_mixup", lam, perm, stage=model.config.num_hidden_layers)
    union = torch.maximum(batch["attention_mask"], batch["attention_mask"][perm])
    with torch.no_grad():
        mixed = adapter.forward(model, batch, mix=mix).feature_map
        own = model.bert(input_ids=batch["input_ids"], attention_mask=union).last_hidden_state
    torch.testing.assert_close(mixed, lam * own + (1 - lam) * own[perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family,targets", [("bert", ["query", "value"]), ("gpt2", ["c_attn"])])
def test_lora_teacher_shares_the_frozen_base(family, targets, tmp_path):
    """A LoRA student: the teacher is an adapter on the student's frozen base, which at the start is the source
    model (its last hidden states are the source's), and SMILE trains."""
    from peft import LoraConfig

    source, student = text_source_and_student(family)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets)
    trainer = token_trainer(student, source, text_args(tmp_path, "smile"), 4, peft_config=config)
    assert isinstance(trainer.teacher, LoraEmaTeacher)
    batch = token_batch([5, 3, 7, 2], pad=pad_id(student))
    with torch.no_grad():
        states = trainer.teacher(batch).feature_map
        expected = source.eval().base_model(**batch).last_hidden_state
    torch.testing.assert_close(states, expected, rtol=1e-5, atol=1e-6)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert {"loss_aux", "loss_reg", "loss_cls"} <= set(logs[0])
    assert all(math.isfinite(v) for log in logs for k, v in log.items() if k.startswith("loss"))


def test_load_text_student_always_starts_a_new_head(tmp_path):
    """Even when the source has as many classes as the target, the student's head is re-initialised and its
    backbone is the source's."""
    from smile_hf.modeling import load_text_student

    source = tiny_text_model("bert", 3)
    source.save_pretrained(tmp_path / "source")
    student = load_text_student(str(tmp_path / "source"), 3, id2label={0: "a", 1: "b", 2: "c"})
    assert not torch.equal(student.classifier.weight, source.classifier.weight)
    for (name, p), q in zip(student.bert.named_parameters(), source.bert.parameters()):
        assert torch.equal(p, q), name
    assert student.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_saved_text_student_is_a_plain_checkpoint(tmp_path):
    """The saved student loads with `AutoModelForSequenceClassification`, without the training-only source head,
    and gives the trained student's logits."""
    trainer = text_trainer(tmp_path, "smile")
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    loaded = T.AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    assert not any(SOURCE_HEAD_NAME in name for name in loaded.state_dict())
    batch = token_batch([5, 3, 7, 2])
    student = trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, student(**batch).logits, rtol=1e-5, atol=1e-6)


def test_a_text_checkpoint_path_and_its_tokenizer(tmp_path):
    """`model=<path of a text checkpoint>`: the student gets a new head (classes from the training set's
    `ClassLabel`), the teacher is the checkpoint's classifier, the tokenizer saved with it is loaded and pads the
    batches (`DataCollatorWithPadding`)."""
    from datasets import ClassLabel, Dataset

    from .text_testing import word_tokenizer

    tokenizer = word_tokenizer()
    source = tiny_text_model("bert", 5)
    source.save_pretrained(tmp_path / "source")
    tokenizer.save_pretrained(tmp_path / "source")
    texts = ["good nice", "bad", "great great okay", "awful poor", "fine", "nice good great poor"]
    data = Dataset.from_dict({"text": texts, "labels": [0, 1, 0, 1, 0, 1]})
    data = data.cast_column("labels", ClassLabel(names=["pos", "neg"]))
    data = data.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
    trainer = SmileTrainer(
        model=str(tmp_path / "source"), args=text_args(tmp_path / "run", "smile"), train_dataset=data
    )
    assert isinstance(trainer.data_collator, T.DataCollatorWithPadding)
    assert trainer.model.config.id2label == {0: "pos", 1: "neg"}
    assert trainer.model.smile_source_head.out_features == 5
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss_reg"])


def test_a_text_model_without_tokenizer_or_collator_is_refused(tmp_path):
    source, student = text_source_and_student("bert")
    with pytest.raises(ValueError, match="padded by its tokenizer: pass `processing_class=tokenizer`"):
        SmileTrainer(
            model=student, args=text_args(tmp_path, "smile"), teacher_model=source, train_dataset=token_dataset(4)
        )


def test_text_delta_term_by_hand():
    """DELTA (uniform attention) on BERT under mixup: the teacher sees the student's mixed input; the term is the
    masked distance of the last layer's outputs of both, recomputed from the base models with the mix by hand."""
    from smile_hf.loss import TransferLoss
    from smile_hf.teacher import FixedTeacher

    source, student = text_source_and_student("bert")
    source.eval(), student.eval()
    with torch.no_grad():  # a student that has moved away from the source
        for p in student.bert.encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    adapter = BackboneAdapter(student)
    loss_fn = TransferLoss("delta+mixup", adapter, FixedTeacher(source, adapter), delta_attention=False)
    batch, perm, lam = token_batch([5, 3, 7, 2]), torch.tensor([2, 0, 3, 1]), 0.6
    out = loss_fn(student, batch, torch.tensor([0, 1, 2, 1]), Mix("mixup", lam, perm))
    union = torch.maximum(batch["attention_mask"], batch["attention_mask"][perm])

    def last_layer(model):
        embeddings = model.get_input_embeddings()(batch["input_ids"])
        return model.bert(inputs_embeds=lam * embeddings + (1 - lam) * embeddings[perm], attention_mask=union)[0]

    with torch.no_grad():
        diff2 = (last_layer(student) - last_layer(source)).pow(2) * union[..., None]
        expected = (diff2.sum(dim=1) / union.sum(dim=1, keepdim=True)).mean(dim=1).sum()  # a_c = 1 / D
    torch.testing.assert_close(out.terms["delta"][1], expected, rtol=1e-5, atol=1e-7)


def test_calibration_folds_the_temperature_into_a_text_head(tmp_path, caplog):
    """`trainer.calibrate` on a text model: the fitted temperature is folded into the head, whose logits on a
    validation batch become the old ones divided by T; its lines count texts."""
    trainer = text_trainer(tmp_path, "finetune")
    trainer.train()
    validation = token_dataset(8, seed=2)
    batch = pad_collator(pad_id(trainer.model))([validation[i] for i in range(4)])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model = trainer.model.eval()
    with torch.no_grad():
        before = model(**inputs).logits
    with caplog.at_level(logging.INFO, logger="smile_hf.calibration"):
        result = trainer.calibrate(validation)
    assert "Temperature scaling fitted on 8 validation texts only" in caplog.text
    assert not math.isclose(result.temperature, 1.0, rel_tol=1e-3)  # else the check below could not fail
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, before / result.temperature, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # about 50 s a family on two CPU cores; the fast suite's two-process run is tests/test_multiprocess.py
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU (gloo) run: the ranks share the machine")
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_two_processes_keep_text_student_and_teacher_identical(family, tmp_path):
    """torchrun, two CPU processes: both see world size 2, and the student (whose word embeddings are looked up
    outside the DDP forward), its auxiliary head and the EMA teacher are identical on both ranks at the end, the
    embeddings and the teacher having moved."""
    import json
    import socket
    import subprocess
    import sys

    from safetensors.torch import load_file

    from .testing_utils import REPO_ROOT, subprocess_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(port), str(REPO_ROOT / "tests" / "ddp_text_rank.py"), family, str(tmp_path),
    ]  # fmt: skip
    env = subprocess_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [json.loads((tmp_path / f"rank{r}.json").read_text())["world_size"] for r in (0, 1)] == [2, 2]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and any(SOURCE_HEAD_NAME in k for k in rank0)
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=name)
    source, _ = text_source_and_student(family)
    embeddings = (
        f"student.{source.base_model_prefix}.{'embeddings.word_embeddings' if family == 'bert' else 'wte'}.weight"
    )
    assert not torch.equal(rank0[embeddings], source.get_input_embeddings().weight.detach())
    teacher = {k: v for k, v in rank0.items() if k.startswith("teacher.")}
    assert any(not torch.equal(v, source.state_dict()[k.removeprefix("teacher.")]) for k, v in teacher.items())
