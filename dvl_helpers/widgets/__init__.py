"""Interactive explorers used in the notebooks (ipywidgets + matplotlib).

Each explorer is an ``ipywidgets.VBox``: the last value of a cell displays it in
JupyterLab and Notebook 7. The picture is a matplotlib figure rendered to PNG
into an ``ipywidgets.Image``, so it needs no interactive matplotlib backend and
a redraw costs one Agg render (tens of milliseconds). The controls are plain
attributes, so code (and the tests) can drive them: ``explorer.slider.value = 500``.
One module per explorer; import them from here.

- :func:`codebook_explorer`: codebook usage over training, one panel per run
  (phase 1: VQ-VAE; phase 2: vanilla against EMA, k-means and restarts).
- :func:`latent_interpolation`: decode the path between the codes of two
  images, with image pickers and a slider (phase 0: VAE).
- :func:`quantizer_playground`: a codebook trained live on a 2-D toy, with the
  Voronoi cells, usage and the cures for dead codes (phases 1 and 2).
- :func:`gumbel_explorer`: soft and hard Gumbel-softmax samples against the
  temperature (phase 3).
- :func:`fsq_grid_explorer`: FSQ's bound and round, one dimension at a time, and
  its implicit grid in 2-D and 3-D (phase 6).
- :func:`token_explorer`: replace one token of an image's codes, decode, and see
  what changed: 1-D latent tokens against a 2-D grid (phase 7).
"""

from .codebook import CodebookExplorer, codebook_explorer, usage_summary
from .fsq import FSQGridExplorer, fsq_grid_explorer
from .gumbel import GumbelExplorer, gumbel_explorer
from .interpolation import LatentInterpolation, latent_interpolation, slerp
from .playground import QuantizerPlayground, quantizer_playground
from .tokens import TokenExplorer, token_explorer

__all__ = ["CodebookExplorer", "codebook_explorer", "usage_summary",
           "LatentInterpolation", "latent_interpolation", "slerp",
           "QuantizerPlayground", "quantizer_playground", "GumbelExplorer", "gumbel_explorer",
           "FSQGridExplorer", "fsq_grid_explorer", "TokenExplorer", "token_explorer"]
