"""Every run label of a curve plot gets its own colour (fine-tuning and mixup used to share matplotlib's first)."""

from __future__ import annotations

from smile_hf.run.compare import LABEL_STYLES, label_styles


def test_demo_labels_keep_their_style_and_others_get_unused_colours():
    labels = ["scratch", "finetune", "mixup", "smile", "l2sp", "cutmix"]
    styles = label_styles(labels)
    assert list(styles) == labels  # the legend keeps the runs' order
    for label in ("scratch", "finetune", "smile"):
        assert styles[label] == LABEL_STYLES[label]
    colours = [styles[label]["color"] for label in labels]
    assert len(set(colours)) == len(labels)  # finetune is tab:blue, matplotlib's first colour: mixup is not
    assert styles["mixup"]["color"] != styles["finetune"]["color"]


def test_many_labels_never_share_colour_and_line_style():
    for labels in ([f"method {i}" for i in range(25)], ["finetune", "smile", *(f"method {i}" for i in range(20))]):
        styles = label_styles(labels)
        pairs = {(s["color"], s["linestyle"]) for s in styles.values()}
        assert len(pairs) == len(labels)
