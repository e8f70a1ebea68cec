# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Pre-train the small text source checkpoint that the offline text benchmark (`python -m benchmarks.text`) transfers
from: a tiny `BertForSequenceClassification` with a WordPiece tokenizer trained here, on the source task of
`data/debian-descriptions` (Debian package descriptions labelled by 12 archive sections).

The tokenizer (lower-cased WordPiece, `--vocab_size` entries) is trained with the `tokenizers` library on the source
task's training descriptions only; the model is trained from random weights with AdamW on the same descriptions,
then evaluated on `source_validation.csv`. Writes `config.json`, `model.safetensors`, the tokenizer files and a model
card `README.md` to the output folder. Regenerate the shipped checkpoint with:

    OMP_NUM_THREADS=1 python scripts/train_text_source_model.py --output_dir checkpoints/debian-bert-tiny
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

DATA_DIR = "data/debian-descriptions"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def read_csv(path: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of a `package,text,section` file."""
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["section"] for r in rows]


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int) -> BertTokenizerFast:
    """A BERT-style (lower-cased, accents stripped) WordPiece tokenizer trained on `texts`."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return BertTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length)


def build_model(vocab_size: int, labels: list[str], args) -> BertForSequenceClassification:
    torch.manual_seed(args.seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden_size, max_position_embeddings=args.max_length,
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
    )  # fmt: skip
    return BertForSequenceClassification(config)


@torch.no_grad()
def accuracy(model, tokenizer, texts: list[str], labels: torch.Tensor, max_length: int) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(texts), 128):
        batch = tokenizer(texts[start : start + 128], truncation=True, max_length=max_length, padding=True,
                          return_tensors="pt")  # fmt: skip
        correct += (model(**batch).logits.argmax(-1) == labels[start : start + 128]).sum().item()
    return correct / len(texts)


def train(model, tokenizer, texts: list[str], labels: torch.Tensor, args) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = -(-len(texts) // args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=steps_per_epoch * args.epochs, pct_start=0.1
    )
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(texts), generator=generator).tolist()
        for step in range(steps_per_epoch):
            batch = order[step * args.batch_size : (step + 1) * args.batch_size]
            inputs = tokenizer([texts[i] for i in batch], truncation=True, max_length=args.max_length, padding=True,
                               return_tensors="pt")  # fmt: skip
            loss = F.cross_entropy(model(**inputs).logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"epoch {epoch} loss {loss.item():.3f} ({time.time() - start:.0f}s)", flush=True)


def write_model_card(results: dict, path: str) -> None:
    card = f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [smile_hf, bert, tiny, debian]
license: apache-2.0
language: [en]
---

# {results["name"]}

A tiny BERT ({results["num_parameters"]:,} parameters) and its WordPiece tokenizer, pre-trained from random weights
on Debian package descriptions labelled by archive section (the source task of `data/debian-descriptions`: 12
sections, 720 descriptions). Shipped with smile_hf as an offline text source checkpoint (`python -m
benchmarks.text`). Not meant for any real use.

- Architecture: `BertForSequenceClassification`, hidden size {results["hidden_size"]}, {results["layers"]} layers,
  {results["heads"]} heads, intermediate size {4 * results["hidden_size"]}, at most {results["max_length"]} tokens.
- Tokenizer: lower-cased WordPiece, {results["vocab_size"]} entries, trained with `tokenizers` on the source
  training descriptions only.
- Training: AdamW (weight decay 0.01), one-cycle lr (max {results["lr"]}), batch {results["batch_size"]},
  {results["epochs"]} epochs, seed {results["seed"]}: {results["train_seconds"]:.0f} s on 2 shared CPU cores.
- **Source validation accuracy: {100 * results["validation_accuracy"]:.2f}%** (180 descriptions, 12 sections;
  training accuracy {100 * results["train_accuracy"]:.2f}%).

Regenerate:

    OMP_NUM_THREADS=1 python scripts/train_text_source_model.py --output_dir checkpoints/{results["name"]}

Exact weights (and the last digits of the accuracy) may differ across machines and torch builds.
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="checkpoints/debian-bert-tiny")
    parser.add_argument("--data_dir", default=DATA_DIR)
    parser.add_argument("--vocab_size", type=int, default=4000)
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts, sections = read_csv(os.path.join(args.data_dir, "source_train.csv"))
    val_texts, val_sections = read_csv(os.path.join(args.data_dir, "source_validation.csv"))
    names = sorted(set(sections))
    labels = torch.tensor([names.index(s) for s in sections])
    val_labels = torch.tensor([names.index(s) for s in val_sections])
    tokenizer = train_tokenizer(texts, args.vocab_size, args.max_length)
    model = build_model(len(tokenizer), names, args)
    start = time.time()
    train(model, tokenizer, texts, labels, args)
    seconds = time.time() - start
    results = {
        "name": os.path.basename(os.path.normpath(args.output_dir)),
        "train_accuracy": accuracy(model, tokenizer, texts, labels, args.max_length),
        "validation_accuracy": accuracy(model, tokenizer, val_texts, val_labels, args.max_length),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer), "train_seconds": seconds,
        **{k: getattr(args, k) for k in ("hidden_size", "layers", "heads", "max_length", "lr", "batch_size", "epochs",
                                         "seed")},
    }  # fmt: skip
    print(f"source validation accuracy {results['validation_accuracy']:.4f} ({seconds:.0f}s of training)")
    os.makedirs(args.output_dir, exist_ok=True)
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    with open(os.path.join(args.output_dir, "training_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    write_model_card(results, os.path.join(args.output_dir, "README.md"))


if __name__ == "__main__":
    main()
