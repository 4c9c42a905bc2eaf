"""Different but correct answers to 05_vqgan: every check must accept each one.

``CASES`` holds ``(check name, answer, how it differs)``: clamp instead of
relu, binary cross-entropy with logits, logsigmoid, einsum, F.normalize,
cosine similarity, the backward recursion of the receptive field, ...
"""
import math

import torch
import torch.nn.functional as F

CASES = []


def right(check, how):
    def register(answer):
        CASES.append((check, answer, how))
        return answer
    return register


# ---------------------------------------------------------------- GAN losses

@right("hinge_d_loss", "clamp(min=0) and the mean of the concatenation (equal sizes)")
def hinge_d_clamp(logits_real, logits_fake):
    real = torch.clamp(1.0 - logits_real, min=0).flatten()
    fake = torch.clamp(1.0 + logits_fake, min=0).flatten()
    return torch.cat([real, fake]).mean()


@right("hinge_d_loss", "two halves written out")
def hinge_d_halves(logits_real, logits_fake):
    loss_real = torch.mean(F.relu(1.0 - logits_real))
    loss_fake = torch.mean(F.relu(1.0 + logits_fake))
    return (loss_real + loss_fake) / 2


@right("hinge_g_loss", "torch.mean with a minus")
def hinge_g_neg(logits_fake):
    return torch.neg(torch.mean(logits_fake))


@right("hinge_g_loss", "sum divided by numel")
def hinge_g_sum(logits_fake):
    return -logits_fake.sum() / logits_fake.numel()


@right("non_saturating_d_loss", "binary cross-entropy with logits against ones and zeros")
def ns_d_bce(logits_real, logits_fake):
    real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
    fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    return 0.5 * (real + fake)


@right("non_saturating_d_loss", "logsigmoid")
def ns_d_logsigmoid(logits_real, logits_fake):
    return -0.5 * (F.logsigmoid(logits_real).mean() + F.logsigmoid(-logits_fake).mean())


@right("non_saturating_g_loss", "binary cross-entropy with logits against ones")
def ns_g_bce(logits_fake):
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


@right("non_saturating_g_loss", "-logsigmoid")
def ns_g_logsigmoid(logits_fake):
    return -F.logsigmoid(logits_fake).mean()


# ---------------------------------------------------------------- adaptive_weight

@right("adaptive_weight", "taming-transformers' code")
def aw_taming(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    nll_grads = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)[0]
    d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + delta)
    return torch.clamp(d_weight, 0.0, max_weight).detach()


@right("adaptive_weight", "both gradients in one call, linalg.vector_norm, min/max")
def aw_one_call(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    (gr,) = torch.autograd.grad([rec_loss], [last_layer_weight], retain_graph=True)
    (gg,) = torch.autograd.grad([g_loss], [last_layer_weight], retain_graph=True)
    ratio = torch.linalg.vector_norm(gr) / (torch.linalg.vector_norm(gg) + delta)
    return torch.minimum(ratio, torch.tensor(float(max_weight))).clamp_min(0.0).detach()


@right("adaptive_weight", "a Python float from sqrt of sums of squares")
def aw_float(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    gr = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True)[0]
    gg = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)[0]
    ratio = math.sqrt(gr.pow(2).sum().item()) / (math.sqrt(gg.pow(2).sum().item()) + delta)
    return min(max(ratio, 0.0), max_weight)


# ---------------------------------------------------------------- perceptual_distance

@right("perceptual_distance", "F.normalize (eps 1e-12) and einsum")
def pd_normalize(features_x, features_y):
    total = 0
    for fx, fy in zip(features_x, features_y):
        d = F.normalize(fx, dim=1) - F.normalize(fy, dim=1)
        total = total + torch.einsum("bchw,bchw->bhw", d, d).mean(dim=(1, 2))
    return total


@right("perceptual_distance", "cosine similarity: ||a - b||^2 = 2 - 2 cos for unit vectors")
def pd_cosine(features_x, features_y):
    total = 0
    for fx, fy in zip(features_x, features_y):
        cos = F.cosine_similarity(fx, fy, dim=1, eps=1e-12)
        # a zero vector normalises to 0: then ||a - b||^2 = ||b||^2 (1 or 0), not 2 - 2 cos
        nx = (fx.norm(dim=1) > 0).to(fx.dtype)
        ny = (fy.norm(dim=1) > 0).to(fy.dtype)
        total = total + (nx + ny - 2 * cos).mean(dim=(1, 2))
    return total


@right("perceptual_distance", "LPIPS's normalize_tensor and spatial_average, stacked layers")
def pd_lpips_style(features_x, features_y):
    def normalize_tensor(x, eps=1e-10):
        norm_factor = torch.sqrt(torch.sum(x ** 2, dim=1, keepdim=True))
        return x / (norm_factor + eps)

    def spatial_average(x):
        return x.mean([2, 3], keepdim=True)

    layers = [spatial_average(((normalize_tensor(a) - normalize_tensor(b)) ** 2).sum(dim=1, keepdim=True))
              for a, b in zip(features_x, features_y)]
    return torch.stack(layers).sum(0).reshape(-1)


@right("perceptual_distance", "norm clamped from below, flattened space")
def pd_clamp(features_x, features_y):
    out = torch.zeros(features_x[0].shape[0])
    for fx, fy in zip(features_x, features_y):
        nx = fx / fx.norm(dim=1, keepdim=True).clamp_min(1e-8)
        ny = fy / fy.norm(dim=1, keepdim=True).clamp_min(1e-8)
        out = out + (nx - ny).pow(2).sum(1).flatten(1).mean(1)
    return out


# ---------------------------------------------------------------- disc_weight

@right("disc_weight", "float of a comparison")
def dw_float(step, disc_start):
    return float(step >= disc_start)


@right("disc_weight", "an int 0 or 1")
def dw_int(step, disc_start):
    return 0 if step < disc_start else 1


@right("disc_weight", "taming's adopt_weight with weight 1")
def dw_adopt(step, disc_start):
    weight = 1.0
    if step < disc_start:
        weight = 0.0
    return weight


# ---------------------------------------------------------------- patchgan_receptive_field

@right("patchgan_receptive_field", "the backward recursion from the output r = (r - 1) s + k")
def rf_backward(kernel_sizes, strides):
    field = 1
    for k, s in zip(reversed(list(kernel_sizes)), reversed(list(strides))):
        field = (field - 1) * s + k
    return field


@right("patchgan_receptive_field", "cumulative products of the strides")
def rf_cumprod(kernel_sizes, strides):
    jumps = [1]
    for s in list(strides)[:-1]:
        jumps.append(jumps[-1] * s)
    return 1 + sum((k - 1) * j for k, j in zip(kernel_sizes, jumps))


@right("patchgan_receptive_field", "with torch, returning a 0-dim long tensor")
def rf_torch(kernel_sizes, strides):
    k = torch.tensor(list(kernel_sizes))
    s = torch.tensor(list(strides))
    jumps = torch.cat([torch.ones(1, dtype=torch.long), torch.cumprod(s, 0)[:-1]])
    return 1 + ((k - 1) * jumps).sum()
