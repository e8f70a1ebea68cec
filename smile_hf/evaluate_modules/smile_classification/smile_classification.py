# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Top-1 accuracy, top-k accuracies and expected calibration error of an image classifier, as an `evaluate` module.

Shipped inside the smile_hf package and loaded by local path, so it needs no network:

```python
import evaluate
from smile_hf.metrics import CLASSIFICATION_METRIC_PATH

metric = evaluate.load(CLASSIFICATION_METRIC_PATH)  # or smile_hf.metrics.load_classification_metric()
metric.compute(predictions=logits, references=labels)  # {"accuracy": ..., "top5_accuracy": ..., "ece": ...}
```

The numbers are those of `smile_hf.metrics` (the same functions compute them).
"""

import datasets
import evaluate

from smile_hf.metrics import classification_scores

_DESCRIPTION = """Top-1 accuracy (`accuracy`), top-k accuracy (`top{k}_accuracy`, ties broken towards the lower class
index) and the expected calibration error (`ece`, Guo et al. 2017: equal-width confidence bins) of the softmax of
the logits."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): the logits of each example (one row per example, one column per class).
    references (`list` of `int`): the class id of each example.
    top_k (`tuple` of `int`, *optional*, defaults to `(1, 5)`): the k of the reported accuracies (k = 1 is `accuracy`).
    ece_bins (`int`, *optional*, defaults to 15): equal-width confidence bins of the calibration error.
Returns:
    `dict`: `accuracy`, `top{k}_accuracy` for each k > 1, and `ece`, each a float in [0, 1].
Example:
    >>> metric = evaluate.load("path/to/smile_classification")
    >>> metric.compute(predictions=[[2.0, 1.0], [0.0, 3.0]], references=[0, 0], top_k=(1,))
    {'accuracy': 0.5, 'ece': ...}
"""

_CITATION = """@inproceedings{guo2017calibration,
  title={On Calibration of Modern Neural Networks},
  author={Guo, Chuan and Pleiss, Geoff and Sun, Yu and Weinberger, Kilian Q.},
  booktitle={ICML},
  year={2017}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SmileClassification(evaluate.Metric):
    """Top-k accuracies and expected calibration error from logits."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://arxiv.org/abs/1706.04599"],
        )

    def _compute(self, predictions, references, top_k=(1, 5), ece_bins=15):
        return classification_scores(predictions, references, top_k=tuple(top_k), ece_bins=ece_bins)
