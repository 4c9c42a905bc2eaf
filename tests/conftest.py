"""Shared test settings: headless plots and one torch thread per test process.

pytest-xdist runs one process per core; two torch threads in each would
oversubscribe the cores and slow small models by an order of magnitude.
"""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
