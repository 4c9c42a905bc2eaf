"""dvl_helpers: what the notebooks of the Discrete Latent Representations course import.

    import dvl_helpers as dvl
    cfg = dvl.setup(seed=0)          # seed, device, preset (DVL_PRESET), plot style

Modules, one concept each:

- ``presets``    the ``smoke`` / ``cpu`` / ``gpu`` configurations (``cfg``)
- ``data``       ``load(name, split)`` and ``loader(...)``: MNIST, CIFAR-10, offline digits and photos
- ``nn``         ``ResBlock``, conv ``Encoder`` / ``Decoder`` (the VQ-VAE paper's CIFAR-10 network)
- ``training``   ``train(...)``: a plain loop with a progress bar, a ``History`` and checkpoints
- ``metrics``    MSE, normalised MSE, PSNR, SSIM
- ``viz``        image grids, reconstructions, training curves (each returns a figure)
- ``quantizers`` reference implementations of what the phases build (for later phases)
- ``vae``        the Phase 0 VAE: reparameterization, Gaussian KL, negative ELBO
- ``models``     reference models assembled from the pieces above
- ``widgets``    the interactive explorers used in the notebooks
"""
from . import data, metrics, models, nn, presets, quantizers, vae, viz, widgets
from .presets import Preset, get_preset
from .startup import seed_everything, setup
from .training import History, train

__all__ = [
    "Preset", "History", "data", "get_preset", "metrics", "models", "nn", "presets",
    "quantizers", "seed_everything", "setup", "train", "vae", "viz", "widgets",
]
__version__ = "0.1.0"
