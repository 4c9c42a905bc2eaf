"""``train``: the one training loop of the course, short enough to read in one sitting.

Every training cell looks like::

    def step_fn(model, batch):
        x, _ = batch
        x_rec, vq_loss, info = model(x)
        rec = F.mse_loss(x_rec, x)
        return {"loss": rec + vq_loss, "rec": rec, "perplexity": info["perplexity"]}

    history = dvl.train(model, train_loader, step_fn, steps=cfg.steps, lr=cfg.lr,
                        ckpt_path="checkpoints/vqvae.pt")
    dvl.viz.plot_history(history, ["rec", "perplexity"])

Like the UvA tutorials, ``ckpt_path`` makes a re-run cheap: if the checkpoint
exists the weights and history are loaded instead of training again.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

StepFn = Callable[[torch.nn.Module, object], Mapping[str, object]]


class History:
    """Metrics recorded during training, by name.

    ``history["loss"]`` is a NumPy array of the logged values and
    ``history.steps("loss")`` the steps at which they were logged. Scalars are
    stored as floats; tensors with more than one element (say codebook usage
    counts ``[K]``) are stored as NumPy arrays, so ``history["usage"]`` is then
    ``[T, K]``.
    """

    def __init__(self) -> None:
        self._steps: dict[str, list[int]] = {}
        self._values: dict[str, list] = {}

    def log(self, step: int, **metrics) -> None:
        """Record each ``name=value`` at ``step`` (tensors are detached and moved to the CPU)."""
        for name, value in metrics.items():
            self._steps.setdefault(name, []).append(int(step))
            self._values.setdefault(name, []).append(_to_plain(value))

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._values:
            raise KeyError(f"no metric {name!r} in this history; recorded: {', '.join(self.keys()) or 'none'}")
        return np.asarray(self._values[name])

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __len__(self) -> int:
        return max((len(v) for v in self._steps.values()), default=0)

    def steps(self, name: str) -> np.ndarray:
        """The steps at which ``name`` was logged, ``[T]``."""
        self[name]  # raises a helpful KeyError for unknown names
        return np.asarray(self._steps[name])

    def keys(self) -> list[str]:
        return list(self._values)

    def last(self, name: str):
        """The most recent value of ``name``."""
        return self[name][-1]

    def state_dict(self) -> dict:
        return {"steps": self._steps, "values": self._values}

    def load_state_dict(self, state: Mapping) -> None:
        self._steps = {k: list(v) for k, v in state["steps"].items()}
        self._values = {k: list(v) for k, v in state["values"].items()}

    def __repr__(self) -> str:
        return f"History({', '.join(f'{k}[{len(v)}]' for k, v in self._values.items())})"


def _to_plain(value):
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu()
        # a copy: .numpy() shares memory with a float32 CPU tensor, and buffers
        # such as usage counts are updated in place after they are logged
        return value.item() if value.numel() == 1 else value.numpy().copy()
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value.copy()
    return float(value)


def to_device(batch, device):
    """Move a tensor, or the tensors inside a tuple / list / dict, to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _forever(loader: Iterable):
    """Cycle through ``loader`` epoch after epoch (reshuffling each time)."""
    for _ in itertools.count():
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:  # else an empty loader would spin here forever
            raise ValueError("the loader yielded no batch (an empty dataset, or fewer images "
                             "than one batch with drop_last=True)")


def train(
    model: torch.nn.Module,
    loader: Iterable,
    step_fn: StepFn,
    *,
    steps: int,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    eval_fn: Callable[[torch.nn.Module], Mapping[str, object]] | None = None,
    eval_every: int = 0,
    ckpt_path: str | os.PathLike | None = None,
    clip_grad: float | None = None,
    autocast: bool = False,
    device: str | torch.device | None = None,
    log_every: int = 1,
    progress: bool = True,
    desc: str = "train",
) -> History:
    """Train ``model`` for ``steps`` optimisation steps and return its :class:`History`.

    Args:
        model: the network; moved to ``device``.
        loader: yields batches (cycled when it runs out).
        step_fn: ``step_fn(model, batch) -> {"loss": scalar tensor, **other metrics}``;
            the batch is already on ``device``. Every entry is logged.
        steps: number of optimisation steps.
        lr: learning rate of the default optimiser, Adam.
        optimizer: use this optimiser instead of Adam over ``model.parameters()``.
        eval_fn: ``eval_fn(model) -> {name: value}``, called in eval mode without
            gradients every ``eval_every`` steps and after the last step; logged
            under ``"eval_" + name``.
        eval_every: steps between evaluations (0: only at the end, if ``eval_fn``).
        ckpt_path: if the file exists, load the model and history from it and
            return without training; else train and save them there.
        clip_grad: clip the global gradient norm to this value.
        autocast: run ``step_fn`` under mixed precision (bfloat16), on CUDA or CPU.
        device: default: CUDA if available, else CPU.
        log_every: log metrics every this many steps.
        progress: show a (notebook-aware) tqdm progress bar.
        desc: the progress bar's label.

    Returns:
        The :class:`History` of every metric ``step_fn`` returned.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    history = History()

    if ckpt_path is not None and Path(ckpt_path).exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        history.load_state_dict(state["history"])
        return history

    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = _forever(loader)
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=True)
    model.train()
    for step in bar:
        batch = to_device(next(batches), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            metrics = step_fn(model, batch)
        if "loss" not in metrics:
            raise KeyError(f"step_fn must return a dict with a 'loss' entry, got keys {list(metrics)}")
        loss = metrics["loss"]
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"step_fn's 'loss' must be a scalar tensor, got {got}")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; try a lower learning rate")

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()

        if step % log_every == 0 or step == steps:
            history.log(step, **metrics)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if eval_fn is not None and ((eval_every and step % eval_every == 0) or step == steps):
            history.log(step, **{f"eval_{k}": v for k, v in evaluate(model, eval_fn).items()})

    if ckpt_path is not None:
        Path(ckpt_path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "history": history.state_dict()}, ckpt_path)
    return history


@torch.no_grad()
def evaluate(model: torch.nn.Module, eval_fn) -> dict:
    """Call ``eval_fn(model)`` in eval mode without gradients, then restore train mode."""
    was_training = model.training
    model.eval()
    try:
        return dict(eval_fn(model))
    finally:
        model.train(was_training)
