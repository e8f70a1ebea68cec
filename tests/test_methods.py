"""The baselines (L2-SP, DELTA, BSS, RIFLE, Co-Tuning) against their formulas, rebuilt by hand.

Each loss test calls `SmileTrainer.compute_loss` on a fixed batch with a known mix (or none) and recomputes every
term from the models' own outputs: features are read straight from the base model (`model.resnet(x)`,
`model.vit(x)`), not through the adapter's hooks; the mixed input is built by hand; the starting point of L2-SP is
the *source* model's weights; BSS uses NumPy's float64 SVD. Tolerance: 1e-5 relative for sums and norms (float32,
same kernels, only the order of the final reductions differs), 1e-4 for BSS (a different SVD algorithm and
precision), 1e-6 absolute for attention weights and relationship probabilities.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from smile_hf import REGULARIZERS, Mix, SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import BackboneAdapter
from smile_hf.methods import delta as delta_module
from smile_hf.methods import parse_method, rifle

from .testing_utils import (
    IMAGE_SIZE,
    TEST_DEVICE,
    random_image_dataset,
    requires_a_device_per_rank,
    source_and_student,
    subprocess_env,
    training_device_args,
)

RTOL = 1e-5

LABELS = torch.tensor([0, 1, 2, 0, 1, 2], device=TEST_DEVICE)
PERM = torch.tensor([3, 0, 5, 1, 2, 4], device=TEST_DEVICE)


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    """Random images on the test device (drawn on the CPU: the same values on every device)."""
    return torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed)).to(TEST_DEVICE)


def make_trainer(family, tmp_path, method, train_dataset=None, **kwargs):
    source, student = source_and_student(family, num_source=7, num_target=3)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", save_strategy="no", method=method, **training_device_args(),
        **kwargs,
    )
    return SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=train_dataset), source


def with_mixing(method: str, mix) -> str:
    """The method string that makes the trainer mix (the forced mix is only used when the method mixes)."""
    return method if mix is None else f"{method}+{mix.strategy}"


def trainer_loss(trainer, x, y, mix):
    """The trainer's loss of one micro-batch on (x, y) under `mix`; returns the loss and the unweighted terms."""
    output = trainer.loss_fn(trainer.model.train(), x, y, mix)
    return output.loss, {name: value.detach().float() for name, (_, value) in output.terms.items()}


def hand_mixed_images(x, mix):
    if mix is None:
        return x
    if mix.strategy == "cutmix":
        top, bottom, left, right = mix.box
        mixed = x.clone()
        mixed[:, :, top:bottom, left:right] = x[mix.perm][:, :, top:bottom, left:right]
        return mixed
    if mix.strategy == "mixup" or mix.stage == 0:
        return mix.lam * x + (1 - mix.lam) * x[mix.perm]
    return x


def hand_main(logits, y, mix):
    if mix is None:
        return F.cross_entropy(logits, y)
    return mix.lam * F.cross_entropy(logits, y) + (1 - mix.lam) * F.cross_entropy(logits, y[mix.perm])


def new_head(family, model):
    return model.classifier[1] if family == "resnet" else model.classifier


def stage_modules(family, model):
    return model.resnet.encoder.stages if family == "resnet" else BackboneAdapter(model).stages(model)


def hand_forward(family, model, x, mix=None):
    """(logits, pooled, per-stage maps) of `model` on the mixed batch, from one call of its base model; for
    manifold mixup the chosen stage's output is mixed by a hook (run before transformers' recording hooks)."""
    x = hand_mixed_images(x, mix)
    handle = None
    if mix is not None and mix.strategy == "manifold_mixup" and mix.stage > 0:

        def hook(_module, _args, out):
            first = out[0] if isinstance(out, tuple) else out
            mixed = mix.lam * first + (1 - mix.lam) * first[mix.perm]
            return (mixed, *out[1:]) if isinstance(out, tuple) else mixed

        handle = stage_modules(family, model)[mix.stage - 1].register_forward_hook(hook, prepend=True)
    try:
        base = model.base_model(pixel_values=x, output_hidden_states=True)
    finally:
        if handle is not None:
            handle.remove()
    if family == "resnet":
        pooled = base.pooler_output.flatten(1)
        maps = list(base.hidden_states[1:])
    else:  # vit: CLS token is the pooled feature; patch tokens as a 4 x 4 map
        pooled = base.last_hidden_state[:, 0]
        maps = [t[:, 1:].transpose(1, 2).reshape(len(t), -1, 4, 4) for t in base.hidden_states[1:]]
    return new_head(family, model)(pooled), pooled, maps


def soft_ce(target, logits):
    return (-(target * F.log_softmax(logits, dim=-1)).sum(dim=1)).mean()


def half_sq(tensors):
    return 0.5 * sum(float((t.double() ** 2).sum()) for t in tensors)


MIXUP = Mix("mixup", 0.7, PERM)
CUTMIX = Mix("cutmix", 1.0 - (40 * 24) / IMAGE_SIZE**2, PERM, box=(8, 48, 16, 40))


def test_baselines_are_registered_and_combine_with_mixing():
    assert {"l2sp", "delta", "bss", "rifle", "cotuning"} <= set(REGULARIZERS)
    assert parse_method("l2sp+mixup") == ("l2sp", "mixup")
    assert parse_method("delta+cutmix") == ("delta", "cutmix")
    assert parse_method("bss") == ("bss", None)
    assert parse_method("smile+cutmix") == ("smile", "cutmix")
    assert REGULARIZERS["delta"].needs_teacher and not REGULARIZERS["delta"].ema_teacher
    assert REGULARIZERS["cotuning"].needs_source_head and not REGULARIZERS["cotuning"].needs_teacher


# The defaults of BASELINES' references (TLlib's scripts, the SMILE reference's task_config.ini for FGVC-Aircraft and
# Stanford Cars, the RIFLE reference), each tied to the one reference its declaration names.
REFERENCE_DEFAULTS = {
    "l2sp": ({"l2sp_alpha": 0.01, "l2sp_beta": 0.01}, "TLlib"),
    "delta": ({"delta_alpha": 0.001}, "lixingjian/SMILE"),
    "delta_tllib": ({"delta_tllib_alpha": 0.01, "l2sp_beta": 0.01}, "TLlib"),
    "bss": ({"bss_lambda": 0.001, "bss_k": 1}, "TLlib"),
    "rifle": ({"rifle_num_reinits": 1}, "lixingjian/RIFLE"),
    "cotuning": ({"cotuning_lambda": 2.3}, "TLlib"),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_DEFAULTS))
def test_baseline_defaults_follow_one_named_reference(name):
    values, reference = REFERENCE_DEFAULTS[name]
    method = REGULARIZERS[name]()
    declared = {h.name: h for h in REGULARIZERS[name].hyperparameters}
    for key, value in values.items():
        assert getattr(method, key) == value, key
        assert declared[key].reference.startswith(reference), (key, declared[key].reference)


# ---- L2-SP --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mix", [None, MIXUP], ids=["plain", "mixup"])
def test_l2sp_loss_matches_formula(mix, tmp_path):
    trainer, source = make_trainer("resnet", tmp_path, with_mixing("l2sp", mix), l2sp_alpha=0.3, l2sp_beta=0.2)
    trainer.regularizer.setup(trainer)
    model = trainer.model
    with torch.no_grad():  # move away from the starting point so that the penalty is not zero
        for p in model.resnet.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(p.device))
    x = images()

    loss, terms = trainer_loss(trainer, x, LABELS, mix)

    with torch.no_grad():
        logits, _, _ = hand_forward("resnet", model, x, mix)
        source_params = dict(source.resnet.named_parameters())
        sp = half_sq(p - source_params[name] for name, p in model.resnet.named_parameters())
        head = half_sq(new_head("resnet", model).parameters())
        main = float(hand_main(logits, LABELS, mix))
    assert sp > 1e-3
    assert float(terms["sp"]) == pytest.approx(sp, rel=RTOL)
    assert float(terms["head"]) == pytest.approx(head, rel=RTOL)
    assert loss.item() == pytest.approx(main + 0.3 * sp + 0.2 * head, rel=RTOL)


def test_l2sp_starting_point_is_not_affected_by_training(tmp_path):
    trainer, source = make_trainer(
        "resnet", tmp_path, "l2sp", train_dataset=random_image_dataset(8), max_steps=3, per_device_train_batch_size=4,
        learning_rate=0.5, optim="sgd",
    )  # fmt: skip
    trainer.train()
    start = trainer.regularizer.starting_point
    source_params = dict(source.resnet.named_parameters())
    assert start.keys() == source_params.keys()
    for name, p in trainer.model.resnet.named_parameters():
        assert torch.equal(start[name], source_params[name]), name  # w0 = pre-trained weights, bit for bit
        assert start[name].data_ptr() != p.data_ptr()
    moved = [name for name, p in trainer.model.resnet.named_parameters() if not torch.equal(p, start[name])]
    assert len(moved) > len(start) // 2  # training did move the backbone
    optimizer_tensors = {id(t) for s in trainer.optimizer.state.values() for t in s.values() if torch.is_tensor(t)}
    assert not optimizer_tensors & {id(t) for t in start.values()}
    restored = REGULARIZERS["l2sp"](trainer.args)
    restored.load_state_dict({k: v.clone() for k, v in trainer.regularizer.state_dict().items()})
    assert all(torch.equal(restored.starting_point[k], v) for k, v in start.items())


# ---- BSS ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["resnet", "vit"])
@pytest.mark.parametrize("mix", [None, CUTMIX], ids=["plain", "cutmix"])
def test_bss_loss_matches_formula(family, mix, tmp_path):
    trainer, _ = make_trainer(family, tmp_path, with_mixing("bss", mix), bss_lambda=0.5, bss_k=2)
    x = images()

    loss, terms = trainer_loss(trainer, x, LABELS, mix)

    with torch.no_grad():
        logits, pooled, _ = hand_forward(family, trainer.model, x, mix)
    singular = np.linalg.svd(pooled.double().cpu().numpy(), compute_uv=False)  # descending, min(B, D) values
    bss = float((np.sort(singular)[:2] ** 2).sum())
    assert float(terms["bss"]) == pytest.approx(bss, rel=1e-4)
    assert loss.item() == pytest.approx(float(hand_main(logits, LABELS, mix)) + 0.5 * bss, rel=RTOL)


def test_bss_gradient_reaches_the_backbone(tmp_path):
    trainer, _ = make_trainer("resnet", tmp_path, "bss", bss_lambda=1.0)
    loss, _ = trainer_loss(trainer, images(), LABELS, None)
    loss.backward()
    assert all(p.grad is not None for p in trainer.model.resnet.parameters() if p.requires_grad)


# ---- Co-Tuning ----------------------------------------------------------------------------------------------


def test_cotuning_relationship_is_per_class_mean_of_source_softmax(tmp_path):
    """R is computed when training begins, before the first step, from the pre-trained model in eval mode; a class
    without training images gets a uniform row."""
    x = images(10, seed=3)
    y = torch.tensor([0, 1, 0, 0, 1, 1, 1, 0, 1, 0], device=x.device)  # no image of class 2
    from datasets import Dataset

    data = Dataset.from_dict({"pixel_values": x.cpu().numpy(), "labels": y.cpu().numpy()}).with_format("torch")
    trainer, source = make_trainer(
        "resnet", tmp_path, "cotuning", train_dataset=data, max_steps=2, per_device_train_batch_size=4,
        learning_rate=0.5, optim="sgd",
    )  # fmt: skip
    trainer.train()

    with torch.no_grad():
        probs = torch.softmax(source.eval()(pixel_values=x).logits.double(), dim=-1)
    uniform = torch.full((7,), 1 / 7, dtype=torch.double, device=probs.device)
    expected = torch.stack([probs[y == 0].mean(0), probs[y == 1].mean(0), uniform])
    torch.testing.assert_close(trainer.regularizer.relationship.double(), expected, atol=1e-6, rtol=0)
    saved = trainer.regularizer.state_dict()["relationship"]  # the buffer itself is saved, not a recomputation
    assert saved.data_ptr() == trainer.regularizer.relationship.data_ptr() and "relationship" in dict(trainer.regularizer.named_buffers())


@pytest.mark.parametrize("mix", [None, MIXUP, CUTMIX], ids=["plain", "mixup", "cutmix"])
def test_cotuning_loss_matches_formula(mix, tmp_path):
    trainer, source = make_trainer("resnet", tmp_path, with_mixing("cotuning", mix), cotuning_lambda=2.3)
    relationship = torch.softmax(torch.randn(3, 7, generator=torch.Generator().manual_seed(5)), dim=-1).to(TEST_DEVICE)
    trainer.regularizer.load_state_dict({"relationship": relationship})
    x = images()

    loss, terms = trainer_loss(trainer, x, LABELS, mix)

    with torch.no_grad():
        logits, pooled, _ = hand_forward("resnet", trainer.model, x, mix)
        source_logits = source.classifier[1](pooled)  # the attached source head starts as the pre-trained head
        if mix is None:
            co = soft_ce(relationship[LABELS], source_logits)
        else:
            co = mix.lam * soft_ce(relationship[LABELS], source_logits) + (1 - mix.lam) * soft_ce(
                relationship[LABELS[mix.perm]], source_logits
            )
        main = hand_main(logits, LABELS, mix)
    assert float(terms["cotuning"]) == pytest.approx(float(co), rel=RTOL)
    assert loss.item() == pytest.approx(float(main + 2.3 * co), rel=RTOL)


# ---- DELTA --------------------------------------------------------------------------------------------------


def hand_delta_smile(student_map, teacher_map, attention):
    """The SMILE reference's DELTA on one map, element by element: sum_{b,c} a_c ||dF[b,c]||^2 / (H W)."""
    total = 0.0
    b, c, h, w = student_map.shape
    for bi in range(b):
        for ci in range(c):
            sq = float(((student_map[bi, ci].double() - teacher_map[bi, ci].double()) ** 2).sum())
            total += float(attention[ci]) * sq / (h * w)
    return total


def hand_delta_tllib(student_maps, teacher_maps, attention):
    """TLlib's DELTA, element by element: sum_j 1/2 sum_{b,c} C_j a_c ||dF||^2 / (H W), or 1/2 ||dF||_F^2."""
    total = 0.0
    for j, (fs, ft) in enumerate(zip(student_maps, teacher_maps)):
        b, c, h, w = fs.shape
        for bi in range(b):
            for ci in range(c):
                sq = float(((fs[bi, ci].double() - ft[bi, ci].double()) ** 2).sum())
                total += 0.5 * (sq if attention is None else c * float(attention[j][ci]) * sq / (h * w))
    return total


def random_attention(channels, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(c, generator=g), dim=0) for c in channels]


def perturb(model, scale=0.02, seed=7):
    """Move the student's backbone away from the teacher's (ViT has no BatchNorm to make them differ)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.base_model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.device))


DELTA_CASES = [
    ("resnet", None, True),
    ("resnet", MIXUP, True),
    ("resnet", None, False),
    ("vit", CUTMIX, True),
    ("vit", Mix("manifold_mixup", 0.6, PERM, stage=1), True),
    ("resnet", Mix("manifold_mixup", 0.6, PERM, stage=2), False),
]


@pytest.mark.parametrize("family,mix,attention", DELTA_CASES)
def test_delta_follows_the_smile_reference(family, mix, attention, tmp_path):
    """`delta`: the last stage's output only (transformers' last hidden state, read here without the adapter),
    sum_{b,c} a_c ||dF||^2 / (H W) summed over the batch, no 1/2 C factor, no head term; a_c = 1/C without attention."""
    trainer, source = make_trainer(family, tmp_path, with_mixing("delta", mix), delta_alpha=0.05, delta_attention=attention)
    trainer.regularizer.setup(trainer)
    channels = 16  # the last stage's channels of both tiny models
    weights = random_attention([channels])
    if attention:  # a CPU tensor, as a checkpoint loads it: the method moves it to the batch's device
        trainer.regularizer.load_state_dict({"attention.0": weights[0]})
    perturb(trainer.model)
    x = images()

    loss, terms = trainer_loss(trainer, x, LABELS, mix)

    with torch.no_grad():
        logits, _, student_maps = hand_forward(family, trainer.model, x, mix)
        _, _, teacher_maps = hand_forward(family, source.eval(), x, mix)  # the frozen teacher on the same input
        assert student_maps[-1].shape[1] == channels and len(student_maps) > 1
        a = weights[0] if attention else torch.full((channels,), 1.0 / channels)
        delta = hand_delta_smile(student_maps[-1], teacher_maps[-1], a)
        earlier = sum(hand_delta_smile(s, t, torch.ones(s.shape[1])) for s, t in zip(student_maps[:-1], teacher_maps))
        main = float(hand_main(logits, LABELS, mix))
    assert delta > 0 and earlier > 0  # the earlier stages differ too, and are left out
    assert set(terms) == {"main", "delta"}
    assert float(terms["delta"]) == pytest.approx(delta, rel=RTOL)
    assert float(terms["delta"]) != pytest.approx(channels / 2 * delta, rel=0.1)  # no C/2 factor
    assert loss.item() == pytest.approx(main + 0.05 * delta, rel=RTOL)


def tllib_convolutions(model):
    """TLlib's hook points of a transformers ResNet, named by hand: the last block's last convolution per stage."""
    stages = model.resnet.encoder.stages
    return [model.get_submodule(f"resnet.encoder.stages.{j}.layers.{len(s.layers) - 1}.layer.2.convolution")
            for j, s in enumerate(stages)]  # fmt: skip


def hand_conv_maps(model, x):
    """(logits, outputs of TLlib's hook points) of one call of `model`, read by hooks placed here."""
    maps = []
    handles = [m.register_forward_hook(lambda _m, _a, out: maps.append(out)) for m in tllib_convolutions(model)]
    try:
        logits = model(pixel_values=x).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits, maps


@pytest.mark.parametrize("mix,attention", [(None, True), (MIXUP, True), (None, False)])
def test_delta_tllib_follows_tllib(mix, attention, tmp_path):
    """`delta_tllib`: the last convolution of each stage (before its BatchNorm and the residual sum), TLlib's
    1/2 C a_c scale, plus beta/2 ||w_head||^2."""
    trainer, source = make_trainer(
        "resnet", tmp_path, with_mixing("delta_tllib", mix), delta_tllib_alpha=0.05, l2sp_beta=0.2,
        delta_attention=attention,
    )  # fmt: skip
    weights = random_attention((8, 16))  # the channels of the last convolution of the tiny ResNet's 2 stages
    if attention:
        trainer.regularizer.load_state_dict({f"attention.{j}": w for j, w in enumerate(weights)})
    trainer.regularizer.setup(trainer)
    trainer.regularizer.prepare(trainer)  # hooks the convolutions; the attention is already known
    perturb(trainer.model)
    x = images()

    loss, terms = trainer_loss(trainer, x, LABELS, mix)

    with torch.no_grad():
        mixed = hand_mixed_images(x, mix)
        logits, student_maps = hand_conv_maps(trainer.model.train(), mixed)
        _, teacher_maps = hand_conv_maps(source.eval(), mixed)
        delta = hand_delta_tllib(student_maps, teacher_maps, weights if attention else None)
        head = half_sq(new_head("resnet", trainer.model).parameters())
        main = float(hand_main(logits, LABELS, mix))
    assert len(student_maps) == 2 and delta > 0
    assert float(terms["delta"]) == pytest.approx(delta, rel=RTOL)
    assert float(terms["head"]) == pytest.approx(head, rel=RTOL)
    assert loss.item() == pytest.approx(main + 0.05 * delta + 0.2 * head, rel=RTOL)


def test_delta_tllib_refuses_families_without_its_hook_points(tmp_path):
    trainer, _ = make_trainer("vit", tmp_path, "delta_tllib", delta_attention=False)
    with pytest.raises(ValueError, match="use method 'delta'"):
        trainer.regularizer.prepare(trainer)


def test_delta_tllib_needs_its_hooks_before_the_first_step(tmp_path):
    trainer, _ = make_trainer("resnet", tmp_path, "delta_tllib", delta_attention=False)
    with pytest.raises(RuntimeError, match="call `prepare"):
        trainer_loss(trainer, images(), LABELS, None)


def test_delta_with_manifold_mixup_compares_like_with_like(tmp_path):
    """At the start student and teacher are the same ViT (no dropout): on the same mixed batch their stage outputs
    are equal, whichever model ran first (transformers installs its hidden-state hooks lazily, on the first call)."""
    trainer, _ = make_trainer("vit", tmp_path, "delta+manifold_mixup", delta_attention=False)
    trainer.regularizer.setup(trainer)
    x = images()
    trainer.teacher(x, output_hidden_states=True)  # the teacher's recording hooks now come first
    for stage in (1, 2):
        _, terms = trainer_loss(trainer, x, LABELS, Mix("manifold_mixup", 0.6, PERM, stage=stage))
        assert float(terms["delta"]) == 0.0


def hand_importance(family, source, probe, x, y, modules):
    """Delta^j_c: mean over images of CE(channel c of the output of modules[j] zeroed) - CE(intact), one channel
    at a time."""
    source.eval()

    def per_image_ce():
        _, pooled, _ = hand_forward(family, source, x)
        return F.cross_entropy(probe(pooled), y, reduction="none").double()

    with torch.no_grad():
        intact = per_image_ce()
        result = []
        for module in modules:
            shapes = []
            handle = module.register_forward_hook(lambda _m, _a, out: shapes.append((out[0] if isinstance(out, tuple) else out).shape))
            hand_forward(family, source, x[:1])
            handle.remove()
            num_channels = shapes[0][-1] if len(shapes[0]) == 3 else shapes[0][1]
            values = []
            for c in range(num_channels):

                def zero(_m, _a, out, c=c):
                    first = (out[0] if isinstance(out, tuple) else out).clone()
                    if first.dim() == 3:  # tokens: channel c of every token
                        first[..., c] = 0.0
                    else:
                        first[:, c] = 0.0
                    return (first, *out[1:]) if isinstance(out, tuple) else first

                handle = module.register_forward_hook(zero)
                try:
                    values.append(float((per_image_ce() - intact).mean()))
                finally:
                    handle.remove()
            result.append(np.array(values))
    return result


def hand_probe(features, labels, epochs, seed):
    """The documented linear probe: default init under manual_seed(seed), SGD 0.01 Nesterov 0.9, batches of 32 in
    a torch.Generator(seed) permutation per epoch, lr x exp(log(0.1) / 6) per epoch (initialisation and permutations
    drawn on the CPU, the training on the features' device)."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(features.shape[1], 3).to(features.device)
    g = torch.Generator().manual_seed(seed)
    lr = 0.01
    buffers = [torch.zeros_like(p) for p in head.parameters()]
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=g).to(features.device)
        for start in range(0, len(features), 32):
            idx = order[start : start + 32]
            head.zero_grad()
            F.cross_entropy(head(features[idx]), labels[idx]).backward()
            with torch.no_grad():
                for p, buf in zip(head.parameters(), buffers):
                    buf.mul_(0.9).add_(p.grad)
                    p.sub_(lr * (p.grad + 0.9 * buf))
        lr *= np.exp(np.log(0.1) / 6)
    return head


@pytest.mark.parametrize("family,method", [("resnet", "delta"), ("vit", "delta"), ("resnet", "delta_tllib")])
def test_delta_attention_follows_the_documented_procedure(family, method, tmp_path, monkeypatch):
    """On the regularised layers: the last stage (`delta`), the last convolution of every stage (`delta_tllib`)."""
    x = images(40, seed=4)
    y = torch.arange(40, device=x.device) % 3
    from datasets import Dataset

    data = Dataset.from_dict({"pixel_values": x.cpu().numpy(), "labels": y.cpu().numpy()}).with_format("torch")
    trainer, source = make_trainer(
        family, tmp_path, method, train_dataset=data, per_device_train_batch_size=8, delta_attention_batches=2,
        delta_attention_epochs=3, seed=11,
    )  # fmt: skip
    trainer.get_train_dataloader = lambda: DataLoader(data, batch_size=8, shuffle=False)  # a known order
    before = {k: v.clone() for k, v in source.state_dict().items()}
    trainer.regularizer.setup(trainer)
    trainer.regularizer.prepare(trainer)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in before.items())  # the pre-trained model is frozen

    with torch.no_grad():
        _, features, _ = hand_forward(family, source.eval(), x)
    probe = hand_probe(features, y, epochs=3, seed=11)
    modules = tllib_convolutions(source) if method == "delta_tllib" else [stage_modules(family, source)[-1]]
    importance = hand_importance(family, source, probe, x[:16], y[:16], modules)  # 2 batches of 8
    expected = []
    for values in importance:
        z = (values - values.mean()) / values.std()
        expected.append(np.exp(z / 5) / np.exp(z / 5).sum())
    attention = trainer.regularizer.attention
    assert [len(a) for a in attention] == [len(e) for e in expected]
    # float32 round-off of the CE differences, divided by their std by the z-score: inside a residual branch the
    # differences are smaller (the channel still carries the BatchNorm shift), so the bound is looser there
    atol = 5e-6 if method == "delta_tllib" else 1e-6
    for got, want in zip(attention, expected):
        np.testing.assert_allclose(got.double().cpu().numpy(), want, atol=atol, rtol=0)
        assert float(got.sum()) == pytest.approx(1.0, abs=1e-6)


def test_delta_attention_is_computed_once_before_training_and_restored_from_state(tmp_path, monkeypatch):
    calls = []
    original = delta_module.channel_importance
    monkeypatch.setattr(delta_module, "channel_importance", lambda *a, **k: calls.append(1) or original(*a, **k))
    kwargs = dict(
        train_dataset=random_image_dataset(8), max_steps=2, per_device_train_batch_size=4, delta_attention_batches=1,
        delta_attention_epochs=1,
    )  # fmt: skip
    trainer, _ = make_trainer("resnet", tmp_path, "delta", **kwargs)
    trainer.train()
    assert len(calls) == 1
    state = trainer.regularizer.state_dict()
    assert sorted(state) == ["attention.0"]  # the last stage only

    resumed, _ = make_trainer("resnet", tmp_path, "delta", **kwargs)
    resumed.regularizer.load_state_dict({k: v.clone() for k, v in state.items()})
    resumed.train()
    assert len(calls) == 1  # not recomputed
    assert all(torch.equal(a, state[f"attention.{j}"]) for j, a in enumerate(resumed.regularizer.attention))


def test_attention_weights_of_constant_importance_are_uniform(torch_device):
    weights = delta_module.attention_from_importance(torch.ones(4, device=torch_device))
    torch.testing.assert_close(weights, torch.full((4,), 0.25, device=torch_device))


# ---- RIFLE --------------------------------------------------------------------------------------------------


def test_rifle_schedule_is_evenly_spaced_and_never_near_the_end():
    assert rifle.reinit_steps(10, 1) == [5]
    assert rifle.reinit_steps(10, 2) == [3, 7]
    assert rifle.reinit_steps(9000, 3) == [2250, 4500, 6750]
    assert rifle.reinit_steps(100, 0) == []
    for max_steps in range(1, 120):
        for n in range(0, 6):
            steps = rifle.reinit_steps(max_steps, n)
            assert len(steps) <= n and steps == sorted(set(steps))
            assert all(0 < s < max_steps for s in steps)
            if steps:  # the last period, about T / (n + 1) steps, is left to train the final head
                assert max_steps - steps[-1] >= max_steps / (n + 1) - 0.5


def test_rifle_reinitialises_the_head_exactly_at_the_scheduled_steps(tmp_path, monkeypatch):
    """With a zero learning rate the head can only change by re-initialisation: it changes after steps 2, 4 and 6
    of 8 (n = 3), to values of PyTorch's default nn.Linear initialisation, and never afterwards."""
    from transformers import TrainerCallback

    trainer, _ = make_trainer(
        "resnet", tmp_path, "rifle", train_dataset=random_image_dataset(32), max_steps=8, per_device_train_batch_size=4,
        rifle_num_reinits=3, learning_rate=0.0, optim="sgd",
    )  # fmt: skip
    head = new_head("resnet", trainer.model)
    snapshots = {0: head.weight.detach().clone()}

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots[state.global_step] = head.weight.detach().clone()

    trainer.add_callback(Record())  # runs after RIFLE's callback
    trainer.train()

    changed = [s for s in range(1, 9) if not torch.equal(snapshots[s], snapshots[s - 1])]
    assert changed == [2, 4, 6]
    bound = 1 / np.sqrt(head.in_features)  # kaiming_uniform(a=sqrt(5)) bound of nn.Linear
    for s in changed:
        assert float(snapshots[s].abs().max()) <= bound
    assert head.weight.shape == (3, 16)


# ---- several processes --------------------------------------------------------------------------------------

DDP_SCRIPT = """
import os, sys
from safetensors.torch import save_file
from smile_hf import SmileTrainer, SmileTrainingArguments
from tests.testing_utils import finish_rank, random_image_dataset, source_and_student, training_device_args

state = {}
for method in ("cotuning", "delta"):
    source, student = source_and_student("resnet", device="cpu")  # the Trainer puts them on this rank's device
    args = SmileTrainingArguments(
        output_dir=sys.argv[1], method=method, report_to="none", **training_device_args(), save_strategy="no", max_steps=1,
        per_device_train_batch_size=4, delta_attention_batches=1, delta_attention_epochs=2, disable_tqdm=True,
        ddp_find_unused_parameters=False,
    )
    trainer = SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(16))
    trainer.train()
    state.update({f"{method}.{k}": v.cpu().contiguous() for k, v in trainer.regularizer.state_dict().items()})
    state[f"{method}.world_size"] = __import__("torch").tensor(args.world_size)
save_file(state, os.path.join(sys.argv[1], f"rank{os.environ.get('RANK', 0)}.safetensors"))
finish_rank()
"""


@requires_a_device_per_rank(2)
def test_relationship_and_attention_are_the_same_on_every_process(tmp_path, torch_device):
    """Two processes (torchrun; gloo on the CPU, one device each on an accelerator), each reading half of the
    training set: Co-Tuning's R is the single-process R over the whole set, and DELTA's attention is the same on
    both ranks."""
    import socket
    import subprocess
    import sys

    from safetensors.torch import load_file

    script = tmp_path / "run.py"
    script.write_text(DDP_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = subprocess_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", str(port), str(script), str(tmp_path)]  # fmt: skip
    result = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert int(rank0["delta.world_size"]) == 2
    assert rank0.keys() == rank1.keys() and {"cotuning.relationship", "delta.attention.0"} <= set(rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key

    with torch.no_grad():  # R over the whole training set, computed by hand in this process
        source, _ = source_and_student("resnet")
        data = random_image_dataset(16)[:]
        probs = torch.softmax(source.eval()(pixel_values=data["pixel_values"].to(torch_device)).logits.double(), dim=-1)
        labels = data["labels"].to(torch_device)
        expected = torch.stack([probs[labels == c].mean(0) for c in range(3)])
    torch.testing.assert_close(rank0["cotuning.relationship"].double(), expected.cpu(), atol=1e-6, rtol=0)
