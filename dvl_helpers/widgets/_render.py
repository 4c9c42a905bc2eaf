"""What every explorer shares: a matplotlib figure rendered to PNG bytes, and frame lookup."""
from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure


def _png(figure: Figure) -> bytes:
    """The figure rendered to PNG bytes (one Agg render)."""
    buffer = io.BytesIO()
    # the fastest zlib level: a third of the encoding time for a slightly larger image
    figure.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def _frame(steps: np.ndarray, step: int) -> int:
    """Index of the last frame logged at or before ``step`` (the first frame if none)."""
    return max(int(np.searchsorted(steps, step, side="right")) - 1, 0)
