# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What the package's figures share: matplotlib, imported only when a figure is drawn, and writing a figure."""

from __future__ import annotations

import os
from typing import Any


def pyplot(what: str) -> Any:
    """`matplotlib.pyplot` on the file-only Agg backend; an ImportError naming `what` needs it and what to install."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(f"{what} needs matplotlib: pip install matplotlib.") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str, title: str = "") -> str:
    """Title `fig`, lay it out, write it to the PNG `path` (creating its folder), close it; return `path`."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
