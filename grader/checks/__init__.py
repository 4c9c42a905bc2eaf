"""Hidden-test logic of the course, one module per phase.

Each ``check_<name>(answer)`` takes the learner's function or class (the
answer cell whose ``grade_id`` is ``<name>``) and returns ``None`` when it is
right, or raises ``AssertionError`` with a message that says what is wrong
without giving the solution away. The notebooks' hidden test cells call them::

    from grader.checks.vqvae import check_quantize
    check_quantize(quantize)

Modules:

- ``_common``  what every phase shares: calling an answer safely (no output,
  no warnings, errors turned into failures), type and shape assertions,
  float64 comparisons that answers cannot tamper with, detection of answers
  that call the course's reference implementations, and an op recorder for
  memory rules such as "no [N, K, D] tensor".
- ``vae``      phase ``00_vae``: reparameterization, Gaussian KL, negative
  ELBO, the conv VAE.
- ``vqvae``    phase ``01_vqvae``: distances, nearest code, quantize, VQ losses,
  straight-through, usage, perplexity, the VQ layer.
- ``stable_vq`` phase ``02_stable_vq``: EMA codebook update, k-means
  initialisation, dead codes and their restarts, the entropy regulariser,
  the EMA quantizer layer.
- ``gumbel``   phase ``03_gumbel_dvae``: Gumbel noise, Gumbel-softmax (soft and
  straight-through hard, statistical tests with fixed generators), temperature
  schedules, the KL to a uniform prior, the dVAE quantizer.
- ``hierarchical_vq`` phase ``04_hierarchical_vq``: residual and product quantization, the residual and product VQ layers, the VQ-VAE-2 two-level wiring.
- ``vqgan``    phase ``05_vqgan``: hinge and non-saturating GAN losses, the adaptive weight, the perceptual (LPIPS) distance, the discriminator warm-up, the PatchGAN receptive field.
- ``fsq_lfq``  phase ``06_fsq_lfq``: FSQ bound, straight-through rounding, codes and
  their mixed-radix indices, LFQ signs and bit indices, the LFQ entropy loss, the
  FSQ and LFQ layers.
- ``modern_tokenizers`` phase ``07_modern_tokenizers``: patchify and its exact inverse
  (layout, non-square images, memory layouts), the TiTok latent-token encoder and
  mask-token decoder (against the model's own modules, with the usual mistakes named),
  VQ on a frozen encoder (eval mode after ``.train()``, no gradient, no codebook update
  when encoding, the round trip).
- ``priors``   phase ``08_priors``: causal mask, top-k filter, sampling (chi-square tests
  with fixed generators), autoregressive sampling, MaskGIT schedule, decode step and
  generation.

Checks keep their references inside ``grader`` (in float64), never import
``dvl_helpers``, use their own random generators, never print and never warn.
Importing this package is cheap: it imports nothing.
"""
