"""Training with unlabelled images: SMILE's L_aux and L_reg on the unlabelled batch mixed among itself, FixMatch's
pseudo-label term, the stream (keyed by the step, sharded by rank), and that no label of an unlabelled image is read.

Hand computations rebuild each term from the models' own outputs (the base model read directly, as in
tests/test_smile_loss.py) and the stream's draws from NumPy generators seeded as documented in smile_hf.unlabeled;
tolerance 1e-5 relative (float32, the same kernels on the same inputs, only the order of the final sums differs).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import SOURCE_HEAD_NAME
from smile_hf.data import collate
from smile_hf.methods import RegularizerContext, UnlabeledInputs
from smile_hf.methods.fixmatch import fixmatch_loss, pseudo_labels
from smile_hf.methods.mean_teacher import MeanTeacher, sigmoid_rampup, softmax_mse
from smile_hf.unlabeled import UnlabeledStream, view_generator

from .test_export import one_thread  # noqa: F401  (autouse fixture)
from .test_smile_loss import base_features
from .testing_utils import IMAGE_SIZE, random_image_dataset, source_and_student, training_device_args

RTOL = 1e-5


class LabelRead(AssertionError):
    pass


class NoLabel:
    """Stands for the label of an unlabelled image: any use of it fails."""

    def _fail(self, *args, **kwargs):
        raise LabelRead("a label of an unlabelled image was read")

    __int__ = __index__ = __float__ = __bool__ = __hash__ = __eq__ = __lt__ = __array__ = __len__ = _fail
    __iter__ = __getitem__ = __repr__ = __str__ = __reduce__ = __reduce_ex__ = _fail

    def __getattr__(self, name):
        self._fail()


class UnlabeledImages(Dataset):
    """Random images whose `labels` is a [`NoLabel`]."""

    def __init__(self, num: int = 10, seed: int = 5):
        self.images = torch.randn(num, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"pixel_values": self.images[index], "labels": NoLabel()}


def make_trainer(tmp_path, method="smile", unlabeled=None, **kwargs):
    source, student = source_and_student("resnet", num_source=7, num_target=3)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", save_strategy="no", method=method, seed=7,
        per_device_train_batch_size=6, disable_tqdm=True, **training_device_args(), **kwargs,
    )  # fmt: skip
    train = random_image_dataset(12, num_labels=3)
    trainer = SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=train,
                           unlabeled_dataset=unlabeled)  # fmt: skip
    return trainer, source


def soft_ce(q, z):
    return (-(q * F.log_softmax(z, dim=-1)).sum(dim=1)).mean()


def drawn_mix(key, size):
    rng = np.random.default_rng(key)
    lam = float(rng.beta(0.2, 0.2))
    return max(lam, 1 - lam), torch.from_numpy(rng.permutation(size))


def smile_teacher_terms(model, source, x, lam, perm):
    """(L_aux, L_reg) of images `x` mixed by (lam, perm), by hand."""
    mixed = lam * x + (1 - lam) * x[perm]
    feat_s, pooled_s = base_features("resnet", model, mixed)
    aux_logits = getattr(model, SOURCE_HEAD_NAME)(pooled_s)
    p_t = torch.softmax(source(pixel_values=x).logits, dim=-1)
    feat_t, _ = base_features("resnet", source, x)
    l_aux = lam * soft_ce(p_t, aux_logits) + (1 - lam) * soft_ce(p_t[perm], aux_logits)
    height, width = feat_s.shape[-2:]
    assert height * width >= 4
    l_reg = torch.sqrt(((lam * feat_t + (1 - lam) * feat_t[perm] - feat_s) ** 2).sum()) / (height * width)
    return l_aux, l_reg


def test_smile_step_loss_with_unlabelled_batch_equals_hand_computation(tmp_path):
    unlabeled = UnlabeledImages(10)
    trainer, source = make_trainer(tmp_path, unlabeled=unlabeled)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    model = trainer.model.train()

    loss = trainer.compute_loss(model, {"pixel_values": x, "labels": y})

    with torch.no_grad():
        source.eval()
        lam, perm = drawn_mix([7, 0, 0, 0], 6)  # the labelled mix of (seed, step 0, micro-batch 0, rank 0)
        chosen = np.random.default_rng([7, 0, 1]).permutation(10)[:6]  # pass 0 of the stream, draw 0: 6 = 1 x 6
        u = unlabeled.images[torch.from_numpy(chosen)]
        lam_u, perm_u = drawn_mix([7, 0, 0, 0, 1], 6)  # the unlabelled mix: the same key and the stream's
        mixed = lam * x + (1 - lam) * x[perm]
        logits = model(pixel_values=mixed).logits
        l_main = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
        l_aux, l_reg = smile_teacher_terms(model, source, x, lam, perm)
        l_aux_u, l_reg_u = smile_teacher_terms(model, source, u, lam_u, perm_u)
        heads = [model.classifier[1], getattr(model, SOURCE_HEAD_NAME)]
        l_cls = 0.5 * sum((p**2).sum() for h in heads for p in (h.weight, h.bias))
        expected = l_main + 0.1 * (l_aux + l_aux_u) + 0.01 * (l_reg + l_reg_u) + 1e-4 * l_cls

    torch.testing.assert_close(loss.detach(), expected, rtol=RTOL, atol=0)
    assert lam_u != lam  # the unlabelled batch has a mix of its own
    trainer.log({})
    logged = trainer.state.log_history[-1]
    assert logged["loss_aux_unlabeled"] == pytest.approx(l_aux_u.item(), rel=RTOL)
    assert logged["loss_reg_unlabeled"] == pytest.approx(l_reg_u.item(), rel=RTOL)


def test_fixmatch_loss_equals_hand_computation():
    weak = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 5.0], [1.0, 3.5, 0.0]])
    strong = torch.tensor([[0.5, 0.2, -0.1], [1.0, 0.0, 0.0], [0.3, 0.3, 0.1], [-1.0, 0.4, 2.0]])
    # confidences: softmax(4,0,0)[0] = 0.965, row 2 ~0.37, softmax(0,0,5)[2] = 0.987, softmax(1,3.5,0)[1] = 0.90
    total = 0.0
    for w, s in zip(weak.tolist(), strong.tolist()):
        p = [np.exp(v) / sum(np.exp(t) for t in w) for v in w]
        if max(p) >= 0.95:
            k = int(np.argmax(p))
            total += -(s[k] - np.log(sum(np.exp(t) for t in s)))
    expected = total / 4  # the mean over the whole unlabelled batch, confident or not
    assert fixmatch_loss(weak, strong, 0.95).item() == pytest.approx(expected, rel=1e-6)
    assert fixmatch_loss(weak, strong, 0.999).item() == 0.0
    labels, mask = pseudo_labels(weak, 0.95)
    assert labels.tolist() == [0, 0, 2, 1] and mask.tolist() == [1.0, 0.0, 1.0, 0.0]  # 0.965, 0.37, 0.987, 0.90
    assert pseudo_labels(weak, 0.85)[1].tolist() == [1.0, 0.0, 1.0, 1.0]


def test_fixmatch_step_loss_is_labelled_ce_plus_pseudo_label_term(tmp_path):
    unlabeled = UnlabeledImages(20)
    trainer, _ = make_trainer(tmp_path, "fixmatch", unlabeled, unlabeled_batch_ratio=2.0, fixmatch_threshold=0.0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    model = trainer.model.train()

    loss = trainer.compute_loss(model, {"pixel_values": x, "labels": y})

    with torch.no_grad():
        chosen = np.random.default_rng([7, 0, 1]).permutation(20)[:12]  # 2 x 6 unlabelled images
        u = unlabeled.images[torch.from_numpy(chosen)]
        strong = trainer.strong_view(u, view_generator(7, 0, 0, 0))
        assert not torch.allclose(strong, u)
        pseudo = model(pixel_values=u).logits.argmax(-1)  # threshold 0: every image is pseudo-labelled
        expected = F.cross_entropy(model(pixel_values=x).logits, y) + F.cross_entropy(
            model(pixel_values=strong).logits, pseudo
        )
    torch.testing.assert_close(loss.detach(), expected, rtol=RTOL, atol=0)
    trainer.log({})
    assert trainer.state.log_history[-1]["pseudo_label_rate"] == 1.0  # threshold 0: every image passes


def test_fixmatch_logs_the_fraction_of_pseudo_labels_that_pass_the_threshold(tmp_path):
    unlabeled = UnlabeledImages(20)
    trainer, _ = make_trainer(tmp_path, "fixmatch", unlabeled, unlabeled_batch_ratio=2.0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    model = trainer.model.train()
    with torch.no_grad():  # the weak views of step 0 (as in the test above), their confidences by hand
        u = unlabeled.images[torch.from_numpy(np.random.default_rng([7, 0, 1]).permutation(20)[:12])]
        confidence = sorted(torch.softmax(model(pixel_values=u).logits.double(), -1).max(-1).values.tolist())
    assert confidence[3] < confidence[4]
    trainer.regularizer.fixmatch_threshold = (confidence[3] + confidence[4]) / 2  # 8 of the 12 images pass
    trainer.compute_loss(model, {"pixel_values": x, "labels": y})
    trainer.log({})
    assert trainer.state.log_history[-1]["pseudo_label_rate"] == pytest.approx(8 / 12, rel=1e-6)


def test_mean_teacher_pieces_equal_the_reference_formulas():
    # the ramp-up exp(-5 (1 - t/T)^2), 1 from T on and when T = 0
    assert sigmoid_rampup(0, 10) == pytest.approx(np.exp(-5.0))
    assert sigmoid_rampup(5, 10) == pytest.approx(np.exp(-1.25))
    assert sigmoid_rampup(10, 10) == sigmoid_rampup(30, 10) == sigmoid_rampup(3, 0) == 1.0
    # softmax_mse_loss / batch: per image, sum over classes of the squared softmax difference / C, then the mean
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0, 0.0], [3.0, -1.0, 0.5]])
    total = 0.0
    for s, t in zip(student.tolist(), teacher.tolist()):
        ps, pt = np.exp(s) / np.exp(s).sum(), np.exp(t) / np.exp(t).sum()
        total += ((ps - pt) ** 2).sum() / 3
    assert softmax_mse(student, teacher).item() == pytest.approx(total / 2, rel=1e-6)
    # the EMA: the true average 1 - 1/(t + 1) while smaller than alpha, then alpha
    model = torch.nn.Linear(2, 2)
    method = MeanTeacher(mean_teacher_ema_decay=0.97)
    context = RegularizerContext(model, adapter=None, batches=lambda: [])
    method.setup(context)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step, alpha in ((1, 0.5), (100, 0.97)):
        before = {n: t.clone() for n, t in method.teacher_weights.items()}
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        method.on_step_end(context, step, 200)
        for name, p in model.named_parameters():
            expected = alpha * before[name] + (1 - alpha) * p.detach()
            torch.testing.assert_close(method.teacher_weights[name], expected, rtol=1e-6, atol=1e-6)
    assert not torch.equal(method.teacher_weights["weight"], start["weight"])


def test_mean_teacher_step_loss_is_labelled_ce_plus_ramped_consistency(tmp_path):
    """The teacher (weights moved away from the student's) on the second view, in training mode; with a dataset of
    fixed tensors the second view is the same images."""
    unlabeled = UnlabeledImages(20)
    trainer, _ = make_trainer(tmp_path, "mean_teacher", unlabeled, unlabeled_batch_ratio=2.0, mean_teacher_rampup=0.5)
    trainer.state.max_steps = 10  # the ramp-up spans 5 steps: w(0) = 100 exp(-5)
    trainer.regularizer.setup(trainer)
    g = torch.Generator().manual_seed(3)
    for name, value in trainer.regularizer.teacher_weights.items():
        trainer.regularizer.teacher_weights[name] = value + 0.05 * torch.randn(value.shape, generator=g)
    x, y = torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    model = trainer.model.train()
    teacher = copy.deepcopy(model).train()
    with torch.no_grad():
        for name, p in teacher.named_parameters():
            p.copy_(trainer.regularizer.teacher_weights[name])

    loss = trainer.compute_loss(model, {"pixel_values": x, "labels": y})

    with torch.no_grad():
        u = unlabeled.images[torch.from_numpy(np.random.default_rng([7, 0, 1]).permutation(20)[:12])]
        ps, pt = torch.softmax(model(pixel_values=u).logits, -1), torch.softmax(teacher(pixel_values=u).logits, -1)
        consistency = ((ps - pt) ** 2).sum(-1).mean() / 3
        expected = F.cross_entropy(model(pixel_values=x).logits, y) + 100 * np.exp(-5.0) * consistency
    assert consistency > 1e-6  # the teacher does differ
    torch.testing.assert_close(loss.detach(), expected.float(), rtol=RTOL, atol=0)
    trainer.log({})
    assert trainer.state.log_history[-1]["consistency_weight"] == pytest.approx(100 * np.exp(-5.0), rel=1e-6)
    # the teacher's training-mode BatchNorm normalises with batch statistics and leaves the student's running ones
    before = {name: b.clone() for name, b in model.named_buffers()}
    inputs = UnlabeledInputs(u, None, None, None, None, model, trainer.adapter, other_view=u)
    expected_teacher = teacher(pixel_values=u).logits
    torch.testing.assert_close(trainer.regularizer.teacher_logits(inputs), expected_teacher, rtol=RTOL, atol=1e-6)
    assert all(torch.equal(b, before[name]) for name, b in model.named_buffers())


def test_no_label_of_an_unlabelled_image_is_read(tmp_path):
    with pytest.raises(LabelRead):  # the guard does fail on use: collating the labels would read them
        collate([UnlabeledImages(1)[0]])
    terms = {"smile": "loss_aux_unlabeled", "fixmatch": "loss_unlabeled", "mean_teacher": "loss_consistency"}
    for method, term in terms.items():
        trainer, _ = make_trainer(
            tmp_path / method, method, UnlabeledImages(10), max_steps=2, logging_steps=1, unlabeled_batch_ratio=0.5
        )
        trainer.train()
        assert all(term in entry for entry in trainer.state.log_history if "loss" in entry)


@pytest.mark.parametrize(
    "method, unlabeled, kwargs, message",
    [
        ("l2sp", UnlabeledImages(4), {},
         r"Method 'l2sp' cannot use unlabelled images: .* \(smile, fixmatch, mean_teacher\)"),
        ("mixup", UnlabeledImages(4), {}, "Method 'mixup' cannot use unlabelled images"),
        ("fixmatch", None, {}, "Method 'fixmatch' trains on unlabelled images: pass `unlabeled_dataset`"),
        ("mean_teacher", None, {}, "Method 'mean_teacher' trains on unlabelled images: pass `unlabeled_dataset`"),
        ("smile", None, {"unlabeled_batch_ratio": 2.0}, "`unlabeled_batch_ratio` is set but there is no"),
    ],
)
def test_refusals_are_one_line(tmp_path, method, unlabeled, kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        make_trainer(tmp_path, method, unlabeled, **kwargs)
    assert "\n" not in str(error.value)


def test_ratio_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="`unlabeled_batch_ratio` must be > 0"):
        SmileTrainingArguments(output_dir=str(tmp_path), unlabeled_batch_ratio=0.0)


def test_the_stream_is_sharded_by_rank_and_keyed_by_the_draw():
    data = UnlabeledImages(12)
    ranks = [UnlabeledStream(data, 3, seed=4, rank=r, world_size=2) for r in (0, 1)]
    # two draws of two ranks x 3 images = one pass of 12: every image exactly once
    seen = [i for draw in (0, 1) for stream in ranks for _, i in stream.positions(draw)]
    assert sorted(seen) == list(range(12))
    assert seen == np.random.default_rng([4, 0, 1]).permutation(12).tolist()  # pass 0, sharded as DistributedSampler
    assert {e for _, stream in enumerate(ranks) for e, _ in stream.positions(2)} == {1}  # draw 2 starts pass 1
    fresh = UnlabeledStream(data, 3, seed=4, rank=1, world_size=2)  # a resumed process: the same images
    torch.testing.assert_close(fresh.batch(5), ranks[1].batch(5), rtol=0, atol=0)
    # a draw straddling two passes (positions 8..11 of 10 + 10): the end of pass 0, then the start of pass 1
    straddle = UnlabeledStream(UnlabeledImages(10), 4, seed=4).positions(2)
    assert straddle[:2] == [(0, int(i)) for i in np.random.default_rng([4, 0, 1]).permutation(10)[8:]]
    assert straddle[2:] == [(1, int(i)) for i in np.random.default_rng([4, 1, 1]).permutation(10)[:2]]


def test_benchmark_report_pairs_the_methods_per_seed_and_says_when_it_is_reduced():
    from benchmarks.unlabeled import COMPARISONS, FULL_GRID, report, summarise

    accuracy = {"finetune": (0.50, 0.60), "smile": (0.52, 0.61), "smile+unlabeled": (0.55, 0.60),
                "fixmatch": (0.40, 0.70), "mean_teacher": (0.51, 0.62)}  # fmt: skip
    runs = [{"source": "s", "target": "digits", "shots": 5, "seed": seed, "method": m, "accuracy": a[seed]}
            for m, a in accuracy.items() for seed in (0, 1)]  # fmt: skip
    summary = summarise(runs, {"s": {}}, [5], list(accuracy))
    cell = summary["s"]["5"]
    assert cell["smile+unlabeled - smile"]["differences"] == pytest.approx([0.03, -0.01])
    assert cell["smile+unlabeled - smile"]["seeds_better"] == 1
    assert {f"{a} - {b}" for a, b in COMPARISONS} <= set(cell)
    settings = {**FULL_GRID, "shots": [5], "seeds": [0, 1], "target": "digits", "sources": {"s": {"path": "p"}},
                "reduced": True}  # fmt: skip
    text = report({"settings": settings, "summary": summary})
    assert "**Reduced run**" in text and "| 5 | 55.0 [" in text
    assert "+1.0 [" in text  # the mean paired difference smile+unlabeled − smile, in points
