"""What one token encodes: replace it, decode, look at the difference (phase 7).

Works with any tokenizer that turns images into code indices and back:
``encode(x)`` / ``decode_indices(indices)`` (the tokenizers of
``dvl_helpers.tokenizers``) or ``encode_to_indices(x)`` / ``decode_from_indices``
(the notebook's ``FrozenEncoderVQ``). Indices are ``[B, T]`` (a 1-D sequence of
latent tokens) or ``[B, h, w]`` (a 2-D grid); token ``l`` is entry ``l`` in raster order.
"""
from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._render import _png


def _num_codes(model) -> int:
    k = getattr(model, "num_codes", None)
    if k is None:
        k = getattr(getattr(model, "quantizer", None), "num_codes", None)
    if k is None:
        raise TypeError(f"cannot tell the codebook size of {type(model).__name__}: give it a "
                        "num_codes attribute (or a quantizer with one)")
    return int(k)


def _methods(model):
    encode = getattr(model, "encode_to_indices", None) or getattr(model, "encode", None)
    decode = getattr(model, "decode_from_indices", None) or getattr(model, "decode_indices", None)
    if not (callable(encode) and callable(decode)):
        raise TypeError(f"a tokenizer needs encode(x) -> indices and decode_indices(indices) -> images "
                        f"(or encode_to_indices / decode_from_indices), got {type(model).__name__}")
    return encode, decode


def _device(model):
    params = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return params.device if params is not None else torch.device("cpu")


class TokenExplorer(widgets.VBox):
    """Replace one token of an image's codes, decode, and see what changed.

    Controls (attributes): ``model`` (a dropdown of the tokenizers, shown when
    there are several), ``picker`` (the image), ``token`` (the position ``l`` in
    raster order), ``code`` (the code written at ``l``) and ``random_code`` (a
    button drawing a code other than the original one). ``figure`` is the
    matplotlib figure, ``image`` the widget showing it, ``decoded`` the last
    ``[2, C, H, W]`` decodings (original codes, then with the replacement) and
    :meth:`state` what the figure shows. Build it with :func:`token_explorer`.
    """

    def __init__(self, models, images, index: int = 0, token: int = 0, code: int | None = None,
                 seed: int = 0, dpi: int = 80):
        if isinstance(models, torch.nn.Module) or not isinstance(models, dict):
            models = {type(models).__name__: models}
        if not models:
            raise ValueError("models must hold at least one tokenizer")
        for model in models.values():
            _methods(model)
            _num_codes(model)
        images = getattr(images, "images", images)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a dataset or a tensor [N, C, H, W] with C = 1 or 3, got {got}")
        n = images.shape[0]
        if not 0 <= index < n:
            raise ValueError(f"index must lie in [0, {n - 1}], got {index}")
        self.models, self.images = dict(models), images
        self._rng = np.random.default_rng(seed)
        self._holding = False
        self._codes: dict[tuple[str, int], torch.Tensor] = {}
        name = next(iter(self.models))
        length = self.codes(name, index).numel()
        k = _num_codes(self.models[name])
        if not 0 <= token < length:
            raise ValueError(f"token must lie in [0, {length - 1}], got {token}")
        if code is None:
            code = (int(self.codes(name, index).reshape(-1)[token]) + 1) % k

        self.model = widgets.Dropdown(options=list(self.models), value=name, description="tokenizer",
                                      layout=widgets.Layout(width="260px",
                                                            display=None if len(self.models) > 1 else "none"))
        self.picker = widgets.BoundedIntText(value=int(index), min=0, max=n - 1, description="image",
                                             layout=widgets.Layout(width="170px"))
        self.token = widgets.IntSlider(value=int(token), min=0, max=length - 1, description="token",
                                       continuous_update=False, layout=widgets.Layout(width="360px"))
        self.code = widgets.IntSlider(value=int(code), min=0, max=k - 1, description="new code",
                                      continuous_update=False, layout=widgets.Layout(width="360px"))
        self.random_code = widgets.Button(description="random code", icon="random",
                                          tooltip="write a random other code at this token")
        self.image = widgets.Image(format="png")
        self.figure, self._artists = self._build_figure(dpi)
        super().__init__([widgets.HBox([self.model, self.picker, self.random_code]),
                          widgets.HBox([self.token, self.code]), self.image])
        self.model.observe(self._on_model, names="value")
        for control in (self.picker, self.token, self.code):
            control.observe(self._on_change, names="value")
        self.random_code.on_click(self._on_random)
        self.redraw()

    # ---------------------------------------------------------------- model
    def _run(self, name, fn, *args):
        model = self.models[name]
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        try:
            with torch.no_grad():
                return fn(*args)
        finally:
            if hasattr(model, "train"):
                model.train(was_training)

    def codes(self, name: str, index: int) -> torch.Tensor:
        """The code indices of image ``index`` under tokenizer ``name`` (``[T]`` or ``[h, w]``), cached."""
        key = (name, int(index))
        if key not in self._codes:
            encode, _ = _methods(self.models[name])
            x = self.images[key[1]:key[1] + 1].to(_device(self.models[name]))
            self._codes[key] = self._run(name, encode, x)[0].detach().long().cpu()
        return self._codes[key]

    def _decode(self, name: str, indices: torch.Tensor) -> torch.Tensor:
        _, decode = _methods(self.models[name])
        out = self._run(name, decode, indices.to(_device(self.models[name])))
        return out.detach().float().cpu().clamp(0, 1)

    # ---------------------------------------------------------------- figure
    def _build_figure(self, dpi):
        fig = Figure(figsize=(10.5, 2.9), dpi=dpi)
        grid = fig.add_gridspec(1, 5, width_ratios=(1, 1, 1, 1, 1.3), wspace=0.3, left=0.02,
                                right=0.98, top=0.8, bottom=0.05)
        gray = self.images.shape[1] == 1
        blank = np.zeros(tuple(self.images.shape[2:]) + (() if gray else (3,)))
        style = dict(cmap="gray" if gray else None, vmin=0, vmax=1)
        artists = {}
        for col, key in enumerate(("original", "reconstruction", "replaced")):
            ax = fig.add_subplot(grid[0, col])
            ax.set_axis_off()
            artists[key] = ax.imshow(blank, **style)
            artists[key + "_ax"] = ax
        ax = fig.add_subplot(grid[0, 3])
        ax.set_axis_off()
        artists["difference"] = ax.imshow(np.zeros(self.images.shape[2:]), cmap="magma", vmin=0, vmax=1)
        artists["region"] = Rectangle((0, 0), 1, 1, fill=False, edgecolor="C2", linewidth=1.5, visible=False)
        ax.add_patch(artists["region"])
        artists["difference_ax"] = ax
        ax = fig.add_subplot(grid[0, 4])
        ax.set_xticks([])
        ax.set_yticks([])
        artists["tokens"] = ax.imshow(np.zeros((1, 1)), cmap="viridis", vmin=0, vmax=1, aspect="equal")
        artists["marker"] = Rectangle((-0.5, -0.5), 1, 1, fill=False, edgecolor="C3", linewidth=2)
        ax.add_patch(artists["marker"])
        artists["tokens_ax"] = ax
        return fig, artists

    def _on_change(self, _change=None) -> None:
        if not self._holding:
            self.redraw()

    def _on_model(self, _change=None) -> None:
        name = self.model.value
        length = self.codes(name, self.picker.value).numel()
        k = _num_codes(self.models[name])
        self._holding = True            # one redraw for the three controls, not three
        try:
            self.token.max = length - 1
            self.token.value = min(self.token.value, length - 1)
            self.code.max = k - 1
            self.code.value = min(self.code.value, k - 1)
        finally:
            self._holding = False
        self.redraw()

    def _on_random(self, _button=None) -> None:
        original = int(self.codes(self.model.value, self.picker.value).reshape(-1)[self.token.value])
        k = self.code.max + 1
        if k > 1:
            self.code.value = int((original + self._rng.integers(1, k)) % k)

    def state(self) -> dict:
        """What the figure shows now.

        Returns:
            ``{"model", "index", "token", "code", "original_code", "num_tokens",
            "num_codes", "layout" ([T] or [h, w]), "change" (mean |difference|),
            "codes" (the image's codes as nested lists)}``.
        """
        name, index, token = self.model.value, int(self.picker.value), int(self.token.value)
        codes = self.codes(name, index)
        return {"model": name, "index": index, "token": token, "code": int(self.code.value),
                "original_code": int(codes.reshape(-1)[token]), "num_tokens": codes.numel(),
                "num_codes": _num_codes(self.models[name]), "layout": list(codes.shape),
                "change": float(self._change), "codes": codes.tolist()}

    def redraw(self) -> None:
        """Decode the image's codes and the codes with the replacement; update the figure."""
        name, index, token = self.model.value, int(self.picker.value), int(self.token.value)
        codes = self.codes(name, index)
        replaced = codes.reshape(-1).clone()
        replaced[token] = int(self.code.value)
        both = torch.stack([codes, replaced.reshape(codes.shape)])
        self.decoded = self._decode(name, both)                           # [2, C, H, W]
        diff = (self.decoded[1] - self.decoded[0]).abs().mean(0)           # [H, W]
        self._change = diff.mean().item()
        s = self.state()

        def picture(t):
            p = t.permute(1, 2, 0).numpy()
            return p[..., 0] if p.shape[-1] == 1 else p

        a = self._artists
        a["original"].set_data(picture(self.images[index].float().clamp(0, 1)))
        a["reconstruction"].set_data(picture(self.decoded[0]))
        a["replaced"].set_data(picture(self.decoded[1]))
        a["difference"].set_data(diff.numpy())
        a["difference"].set_clim(0, max(float(diff.max()), 1e-6))
        a["original_ax"].set_title(f"image #{index}", fontsize=9)
        a["reconstruction_ax"].set_title(f"decoded ({name})", fontsize=9)
        a["replaced_ax"].set_title(f"token {token}: {s['original_code']} -> {s['code']}", fontsize=9)
        a["difference_ax"].set_title(f"|difference|, mean {self._change:.3f}", fontsize=9)
        layout = codes if codes.dim() == 2 else codes.reshape(1, -1)
        rows, cols = layout.shape
        k = s["num_codes"]
        a["tokens"].set_data(layout.numpy() / max(k - 1, 1))
        a["tokens"].set_extent((-0.5, cols - 0.5, rows - 0.5, -0.5))
        r, c = divmod(token, cols)
        a["marker"].set_xy((c - 0.5, r - 0.5))
        a["tokens_ax"].set_title(f"{codes.numel()} tokens {'x'.join(map(str, codes.shape))}", fontsize=9)
        region = a["region"]
        if codes.dim() == 2:                 # a grid token stands for one region of the image
            h, w = self.images.shape[2:]
            rh, rw = h / rows, w / cols
            region.set_bounds(c * rw - 0.5, r * rh - 0.5, rw, rh)
            region.set_visible(True)
        else:
            region.set_visible(False)
        self.image.value = _png(self.figure)


def token_explorer(models, images, index: int = 0, token: int = 0,
                   code: int | None = None) -> TokenExplorer:
    """An interactive look at what one token encodes.

    Encodes one image, writes another code at one token position, decodes both
    code sequences and shows the original, the two decodings and where they
    differ. For a 2-D grid tokenizer the token's region is outlined on the
    difference map; a 1-D latent token (TiTok) is tied to no region, and its
    difference map shows where it acts.

    Args:
        models: a tokenizer, or a dict ``{name: tokenizer}`` (a dropdown picks one).
            A tokenizer has ``encode(x) -> indices`` and ``decode_indices(indices) ->
            images`` (or ``encode_to_indices`` / ``decode_from_indices``) and a
            ``num_codes`` (or ``quantizer.num_codes``); it runs in eval mode without gradient.
        images: a dataset with ``.images`` ``[N, C, H, W]`` in ``[0, 1]``, or such a tensor.
        index, token: the image and the token position to start with.
        code: the code to write at first (default: the original code + 1).

    Returns:
        A :class:`TokenExplorer` (an ``ipywidgets.VBox``); display it as a cell's last value.
    """
    return TokenExplorer(models, images, index=index, token=token, code=code)
