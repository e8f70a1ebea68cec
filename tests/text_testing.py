"""Tiny text classifiers of every supported text family, built from configs (no download), batches of random
token ids for them, and a [`SmileTrainer`] training on those batches."""

from __future__ import annotations

import torch
import transformers as T
from torch import nn

from smile_hf import SmileTrainer

VOCAB = 99
PAD = 0
_ENCODER = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                pad_token_id=PAD, max_position_embeddings=64)  # fmt: skip
_DECODER = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                intermediate_size=37, pad_token_id=PAD, max_position_embeddings=64)  # fmt: skip

TEXT_CONFIGS = {
    "bert": lambda: T.BertConfig(**_ENCODER),
    "roberta": lambda: T.RobertaConfig(**{**_ENCODER, "pad_token_id": 1}),
    "xlm-roberta": lambda: T.XLMRobertaConfig(**{**_ENCODER, "pad_token_id": 1}),
    "mpnet": lambda: T.MPNetConfig(**{**_ENCODER, "pad_token_id": 1}),
    "distilbert": lambda: T.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=37,
                                             pad_token_id=PAD, max_position_embeddings=64),
    "deberta-v2": lambda: T.DebertaV2Config(**_ENCODER, relative_attention=True, position_buckets=8,
                                            pos_att_type=["p2c", "c2p"]),
    "electra": lambda: T.ElectraConfig(**_ENCODER, embedding_size=16),
    "albert": lambda: T.AlbertConfig(**_ENCODER, embedding_size=16),
    "modernbert": lambda: T.ModernBertConfig(**_ENCODER, global_attn_every_n_layers=2, local_attention=4,
                                             bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3),
    "gpt2": lambda: T.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, pad_token_id=PAD,
                                 bos_token_id=2, eos_token_id=3),
    "llama": lambda: T.LlamaConfig(**_DECODER),
    "qwen2": lambda: T.Qwen2Config(**_DECODER),
    "qwen3": lambda: T.Qwen3Config(**_DECODER, head_dim=16),
}  # fmt: skip
"""Config of a tiny model (hidden size 32, 2 layers, a vocabulary of 99 tokens) of each text family."""
TEXT_FAMILIES = tuple(TEXT_CONFIGS)
DECODERS = ("gpt2", "llama", "qwen2", "qwen3")


def tiny_text_model(family: str, num_labels: int, seed: int = 0) -> nn.Module:
    """A randomly initialised `*ForSequenceClassification` of `family` with `num_labels` classes (eval mode off:
    as built, in train mode)."""
    config = TEXT_CONFIGS[family]()
    config.num_labels = num_labels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return T.AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")


def text_source_and_student(family: str, num_source: int = 5, num_target: int = 3, seed: int = 0):
    """A source classifier and a student sharing its backbone with a new head."""
    source = tiny_text_model(family, num_source, seed=seed)
    student = tiny_text_model(family, num_target, seed=seed + 1)
    student.base_model.load_state_dict(source.base_model.state_dict())
    return source, student


def pad_id(model: nn.Module) -> int:
    return model.config.pad_token_id


def token_batch(lengths, pad: int = PAD, left: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids (from 4: no special token) of the given lengths, padded with `pad` to the longest, on the
    right (or the left), with their attention mask."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, length in enumerate(lengths):
        span = slice(width - length, width) if left else slice(0, length)
        ids[row, span] = torch.randint(4, VOCAB, (length,), generator=generator)
        mask[row, span] = 1
    return {"input_ids": ids, "attention_mask": mask}


def token_dataset(num: int = 16, num_labels: int = 3, seed: int = 0):
    """A `datasets.Dataset` of random token sequences (lengths 3 to 8, unpadded) and labels."""
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)
    rows = []
    for index in range(num):
        length = int(torch.randint(3, 9, (1,), generator=generator))
        ids = torch.randint(4, VOCAB, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": index % num_labels})
    return Dataset.from_list(rows)


def pad_collator(pad: int):
    """A collator padding `input_ids` (with `pad`) and `attention_mask` on the right, as `DataCollatorWithPadding`
    does, without a tokenizer."""

    def collate(features):
        width = max(len(f["input_ids"]) for f in features)
        ids = [f["input_ids"] + [pad] * (width - len(f["input_ids"])) for f in features]
        mask = [f["attention_mask"] + [0] * (width - len(f["attention_mask"])) for f in features]
        labels = [f["labels"] for f in features]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}

    return collate


def word_tokenizer(words=("good", "bad", "fine", "awful", "great", "poor", "okay", "nice")):
    """A tiny word-level `PreTrainedTokenizerFast` (no download): [PAD] = 0, [UNK] = 1, [CLS] = 2, [SEP] = 3, then
    `words`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return T.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def token_trainer(student: nn.Module, source: nn.Module | None, args, examples: int = 8, **kwargs) -> SmileTrainer:
    """A [`SmileTrainer`] of `student` (teacher `source`) on `token_dataset(examples)`, padded with the student's pad
    id; `kwargs` go to the trainer."""
    return SmileTrainer(
        model=student, args=args, teacher_model=source, train_dataset=token_dataset(examples),
        data_collator=pad_collator(pad_id(student)), **kwargs,
    )  # fmt: skip
