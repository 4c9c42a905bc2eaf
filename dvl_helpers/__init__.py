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
- ``gumbel``     the Phase 3 dVAE: Gumbel-softmax, temperature schedules, ``GumbelQuantizer``
- ``hierarchical`` the Phase 4 many-codebook quantizers: residual, product, two-level (``VQVAE2``)
- ``fsq``        the Phase 6 codebook-free quantizers: FSQ and LFQ (``FSQ``, ``LFQ``)
- ``models``     reference models assembled from the pieces above
- ``vqgan``      the Phase 5 VQGAN: GAN losses, adaptive weight, perceptual distance, PatchGAN, training loop
- ``tokenizers`` the Phase 7 tokenizers: patches, 1-D latent tokens (TiTok), a 2-D grid tokenizer, VQ on a frozen encoder
- ``transformer`` plain transformer blocks and the Phase 8 code priors (GPT and MaskGIT)
- ``priors``     the Phase 8 samplers: top-k, autoregressive, MaskGIT; prior training, bits per code
- ``widgets``    the interactive explorers used in the notebooks
"""
from . import (data, fsq, gumbel, hierarchical, metrics, models, nn, presets, priors, quantizers,
               tokenizers, transformer, vae, viz, vqgan, widgets)
from .presets import Preset, get_preset
from .startup import seed_everything, setup
from .training import History, train

__all__ = [
    "Preset", "History", "data", "fsq", "get_preset", "gumbel", "hierarchical", "metrics", "models",
    "nn", "presets", "priors", "quantizers", "seed_everything", "setup", "tokenizers", "train",
    "transformer", "vae", "viz", "vqgan", "widgets",
]
__version__ = "0.1.0"
