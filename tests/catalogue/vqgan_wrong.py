"""Wrong answers to 05_vqgan: every check must reject each one.

``CASES`` holds ``(check name, answer, what is wrong)``: sign and factor
mistakes in the GAN losses, the classic slips of the adaptive weight and of
LPIPS, an off-by-one warm-up, receptive fields that ignore the strides, and
answers that call the course's reference implementation.
"""
import torch
import torch.nn.functional as F

import dvl_helpers
from dvl_helpers.vqgan import hinge_d_loss as ref_hinge_d_loss

CASES = []


def wrong(check, why):
    def register(answer):
        CASES.append((check, answer, why))
        return answer
    return register


# ---------------------------------------------------------------- hinge_d_loss

@wrong("hinge_d_loss", "no ½ in front of the two means")
def hinge_d_no_half(logits_real, logits_fake):
    return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()


@wrong("hinge_d_loss", "relu(1 - fake) instead of relu(1 + fake)")
def hinge_d_fake_sign(logits_real, logits_fake):
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 - logits_fake).mean())


@wrong("hinge_d_loss", "real and fake swapped")
def hinge_d_swapped(logits_real, logits_fake):
    return 0.5 * (F.relu(1 - logits_fake).mean() + F.relu(1 + logits_real).mean())


@wrong("hinge_d_loss", "no relu: a linear (Wasserstein-like) loss")
def hinge_d_no_relu(logits_real, logits_fake):
    return 0.5 * ((1 - logits_real).mean() + (1 + logits_fake).mean())


@wrong("hinge_d_loss", "sums instead of means")
def hinge_d_sum(logits_real, logits_fake):
    return 0.5 * (F.relu(1 - logits_real).sum() + F.relu(1 + logits_fake).sum())


@wrong("hinge_d_loss", "returns per-logit losses, not a scalar")
def hinge_d_no_mean(logits_real, logits_fake):
    return 0.5 * (F.relu(1 - logits_real) + F.relu(1 + logits_fake))


@wrong("hinge_d_loss", "a float through .item(): no gradient")
def hinge_d_item(logits_real, logits_fake):
    return torch.tensor(0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()).item())


@wrong("hinge_d_loss", "calls the reference hinge_d_loss")
def hinge_d_reference(logits_real, logits_fake):
    return ref_hinge_d_loss(logits_real, logits_fake)


@wrong("hinge_d_loss", "clamps the logits in place")
def hinge_d_in_place(logits_real, logits_fake):
    with torch.no_grad():
        logits_real.clamp_(max=1.0)
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


# ---------------------------------------------------------------- hinge_g_loss

@wrong("hinge_g_loss", "the wrong sign: +mean fake")
def hinge_g_sign(logits_fake):
    return logits_fake.mean()


@wrong("hinge_g_loss", "a hinge for the generator too: mean relu(1 - fake)")
def hinge_g_relu(logits_fake):
    return F.relu(1 - logits_fake).mean()


@wrong("hinge_g_loss", "a sum over the logits")
def hinge_g_sum(logits_fake):
    return -logits_fake.sum()


@wrong("hinge_g_loss", "detached")
def hinge_g_detached(logits_fake):
    return -logits_fake.detach().mean()


@wrong("hinge_g_loss", "calls the reference through the package")
def hinge_g_reference(logits_fake):
    return dvl_helpers.vqgan.hinge_g_loss(logits_fake)


# ---------------------------------------------------------------- non_saturating_d_loss

@wrong("non_saturating_d_loss", "softplus signs swapped")
def ns_d_signs(logits_real, logits_fake):
    return 0.5 * (F.softplus(logits_real).mean() + F.softplus(-logits_fake).mean())


@wrong("non_saturating_d_loss", "softplus(-fake) for the fake term")
def ns_d_fake_sign(logits_real, logits_fake):
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(-logits_fake).mean())


@wrong("non_saturating_d_loss", "no ½")
def ns_d_no_half(logits_real, logits_fake):
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


@wrong("non_saturating_d_loss", "naive -log(sigmoid): inf for large logits")
def ns_d_naive(logits_real, logits_fake):
    return 0.5 * (-torch.log(torch.sigmoid(logits_real)).mean()
                  - torch.log(1 - torch.sigmoid(logits_fake)).mean())


@wrong("non_saturating_d_loss", "the hinge loss instead")
def ns_d_hinge(logits_real, logits_fake):
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


# ---------------------------------------------------------------- non_saturating_g_loss

@wrong("non_saturating_g_loss", "softplus(fake): the sign inside softplus")
def ns_g_sign(logits_fake):
    return F.softplus(logits_fake).mean()


@wrong("non_saturating_g_loss", "the saturating minimax loss mean log(1 - sigmoid(fake))")
def ns_g_saturating(logits_fake):
    return -F.softplus(logits_fake).mean()


@wrong("non_saturating_g_loss", "naive -log(sigmoid(fake)): inf for very negative logits")
def ns_g_naive(logits_fake):
    return -torch.log(torch.sigmoid(logits_fake)).mean()


@wrong("non_saturating_g_loss", "a ½ copied from the discriminator's loss")
def ns_g_half(logits_fake):
    return 0.5 * F.softplus(-logits_fake).mean()


# ---------------------------------------------------------------- adaptive_weight

def _norm_grad(loss, w):
    return torch.autograd.grad(loss, w, retain_graph=True)[0].norm()


@wrong("adaptive_weight", "not detached: create_graph=True and the weight stays in the graph")
def aw_not_detached(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    gr = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True, create_graph=True)[0]
    gg = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True, create_graph=True)[0]
    return (gr.norm() / (gg.norm() + delta)).clamp(0, max_weight)


@wrong("adaptive_weight", "ratio inverted")
def aw_inverted(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    ratio = _norm_grad(g_loss, last_layer_weight) / (_norm_grad(rec_loss, last_layer_weight) + delta)
    return ratio.clamp(0, max_weight).detach()


@wrong("adaptive_weight", "no delta")
def aw_no_delta(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    ratio = _norm_grad(rec_loss, last_layer_weight) / _norm_grad(g_loss, last_layer_weight)
    return ratio.clamp(0, max_weight).detach()


@wrong("adaptive_weight", "not clamped")
def aw_no_clamp(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    ratio = _norm_grad(rec_loss, last_layer_weight) / (_norm_grad(g_loss, last_layer_weight) + delta)
    return ratio.detach()


@wrong("adaptive_weight", "delta ignored: a hard-coded 1e-4")
def aw_fixed_delta(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    ratio = _norm_grad(rec_loss, last_layer_weight) / (_norm_grad(g_loss, last_layer_weight) + 1e-4)
    return ratio.clamp(0, max_weight).detach()


@wrong("adaptive_weight", "delta added to the numerator")
def aw_delta_top(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    ratio = (_norm_grad(rec_loss, last_layer_weight) + delta) / _norm_grad(g_loss, last_layer_weight)
    return ratio.clamp(0, max_weight).detach()


@wrong("adaptive_weight", "the gradient of the reconstruction loss twice (copy-paste)")
def aw_same_loss(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    ratio = _norm_grad(rec_loss, last_layer_weight) / (_norm_grad(rec_loss, last_layer_weight) + delta)
    return ratio.clamp(0, max_weight).detach()


@wrong("adaptive_weight", "squared norms")
def aw_squared(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    ratio = _norm_grad(rec_loss, last_layer_weight) ** 2 / (_norm_grad(g_loss, last_layer_weight) ** 2 + delta)
    return ratio.clamp(0, max_weight).detach()


@wrong("adaptive_weight", "L1 norms of the gradients")
def aw_l1(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    gr = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True)[0]
    gg = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)[0]
    return (gr.abs().sum() / (gg.abs().sum() + delta)).clamp(0, max_weight).detach()


@wrong("adaptive_weight", "gradients through .backward(): .grad of every parameter is left filled")
def aw_backward(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    rec_loss.backward(retain_graph=True)
    gr = last_layer_weight.grad.clone()
    last_layer_weight.grad = None
    g_loss.backward(retain_graph=True)
    gg = last_layer_weight.grad.clone()
    return (gr.norm() / (gg.norm() + delta)).clamp(0, max_weight).detach()


@wrong("adaptive_weight", "gradients accumulated in .grad: the second one is rec + gan")
def aw_accumulated(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    rec_loss.backward(retain_graph=True)
    gr = last_layer_weight.grad.clone()
    g_loss.backward(retain_graph=True)
    gg = last_layer_weight.grad.clone()
    last_layer_weight.grad = None
    return (gr.norm() / (gg.norm() + delta)).clamp(0, max_weight).detach()


@wrong("adaptive_weight", "the graph is freed: no retain_graph on the second gradient")
def aw_no_retain(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    gr = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True)[0]
    gg = torch.autograd.grad(g_loss, last_layer_weight)[0]
    return (gr.norm() / (gg.norm() + delta)).clamp(0, max_weight).detach()


@wrong("adaptive_weight", "the norm of the weight, not of a gradient (the wrong tensor)")
def aw_weight_norm(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    gg = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)[0]
    return (last_layer_weight.norm() / (gg.norm() + delta)).clamp(0, max_weight).detach()


@wrong("adaptive_weight", "mean absolute gradients instead of norms")
def aw_mean_abs(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    gr = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True)[0]
    gg = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)[0]
    return (gr.abs().mean() / (gg.abs().mean() + delta)).clamp(0, max_weight).detach()


@wrong("adaptive_weight", "calls the reference")
def aw_reference(rec_loss, g_loss, last_layer_weight, delta=1e-4, max_weight=1e4):
    from dvl_helpers.vqgan import adaptive_weight
    return adaptive_weight(rec_loss, g_loss, last_layer_weight, delta, max_weight)


# ---------------------------------------------------------------- perceptual_distance

def _lpips(fx, fy, normalise, reduce_space, reduce_layers=sum):
    per_layer = []
    for a, b in zip(fx, fy):
        a, b = normalise(a), normalise(b)
        per_layer.append(reduce_space((a - b) ** 2))
    return reduce_layers(per_layer)


def _unit(f):
    return f / (f.norm(dim=1, keepdim=True) + 1e-10)


def _mean_space(d):
    return d.sum(1).mean(dim=(1, 2))


@wrong("perceptual_distance", "no channel normalisation")
def pd_no_normalisation(features_x, features_y):
    return _lpips(features_x, features_y, lambda f: f, _mean_space)


@wrong("perceptual_distance", "normalised along the batch axis")
def pd_batch_axis(features_x, features_y):
    return _lpips(features_x, features_y, lambda f: F.normalize(f, dim=0), _mean_space)


@wrong("perceptual_distance", "normalised along the width axis")
def pd_width_axis(features_x, features_y):
    return _lpips(features_x, features_y, lambda f: F.normalize(f, dim=-1), _mean_space)


@wrong("perceptual_distance", "normalised over the whole feature map of an image")
def pd_whole_map(features_x, features_y):
    return _lpips(features_x, features_y,
                  lambda f: f / (f.flatten(1).norm(dim=1)[:, None, None, None] + 1e-10), _mean_space)


@wrong("perceptual_distance", "summed over space instead of averaged")
def pd_sum_space(features_x, features_y):
    return _lpips(features_x, features_y, _unit, lambda d: d.sum(dim=(1, 2, 3)))


@wrong("perceptual_distance", "averaged over channels instead of summed")
def pd_mean_channels(features_x, features_y):
    return _lpips(features_x, features_y, _unit, lambda d: d.mean(dim=(1, 2, 3)))


@wrong("perceptual_distance", "averaged over layers instead of summed")
def pd_mean_layers(features_x, features_y):
    return _lpips(features_x, features_y, _unit, _mean_space,
                  lambda layers: sum(layers) / len(layers))


@wrong("perceptual_distance", "Euclidean distance, not squared")
def pd_not_squared(features_x, features_y):
    total = 0
    for a, b in zip(features_x, features_y):
        total = total + (_unit(a) - _unit(b)).norm(dim=1).mean(dim=(1, 2))
    return total


@wrong("perceptual_distance", "only the first layer")
def pd_first_layer(features_x, features_y):
    return _lpips(features_x[:1], features_y[:1], _unit, _mean_space)


@wrong("perceptual_distance", "divides by the norm without eps: NaN at all-zero ReLU features")
def pd_no_eps(features_x, features_y):
    return _lpips(features_x, features_y, lambda f: f / f.norm(dim=1, keepdim=True), _mean_space)


@wrong("perceptual_distance", "averaged over the batch too: a scalar")
def pd_scalar(features_x, features_y):
    return _lpips(features_x, features_y, _unit, _mean_space).mean()


@wrong("perceptual_distance", "features detached (no gradient for training)")
def pd_detached(features_x, features_y):
    return _lpips([f.detach() for f in features_x], [f.detach() for f in features_y], _unit, _mean_space)


@wrong("perceptual_distance", "cosine distance 1 - cos summed over layers (half the right value)")
def pd_cosine(features_x, features_y):
    total = 0
    for a, b in zip(features_x, features_y):
        total = total + (1 - F.cosine_similarity(a, b, dim=1)).mean(dim=(1, 2))
    return total


@wrong("perceptual_distance", "normalises the feature maps in place")
def pd_in_place(features_x, features_y):
    total = 0
    for a, b in zip(features_x, features_y):
        with torch.no_grad():
            a.div_(a.norm(dim=1, keepdim=True) + 1e-10)
        total = total + ((a - _unit(b)) ** 2).sum(1).mean(dim=(1, 2))
    return total


# ---------------------------------------------------------------- disc_weight

@wrong("disc_weight", "off by one: step > disc_start")
def dw_off_by_one(step, disc_start):
    return 1.0 if step > disc_start else 0.0


@wrong("disc_weight", "inverted")
def dw_inverted(step, disc_start):
    return 0.0 if step >= disc_start else 1.0


@wrong("disc_weight", "a linear ramp up to disc_start")
def dw_ramp(step, disc_start):
    return min(1.0, step / disc_start) if disc_start > 0 else 1.0


@wrong("disc_weight", "always on")
def dw_always(step, disc_start):
    return 1.0


@wrong("disc_weight", "ZeroDivisionError at disc_start = 0")
def dw_divides(step, disc_start):
    return float(step // disc_start >= 1)


# ---------------------------------------------------------------- patchgan_receptive_field

@wrong("patchgan_receptive_field", "ignores the strides: 1 + sum (k - 1)")
def rf_no_strides(kernel_sizes, strides):
    return 1 + sum(k - 1 for k in kernel_sizes)


@wrong("patchgan_receptive_field", "sum of the kernel sizes")
def rf_sum_kernels(kernel_sizes, strides):
    return sum(kernel_sizes)


@wrong("patchgan_receptive_field", "the jump includes the layer's own stride")
def rf_own_stride(kernel_sizes, strides):
    field, jump = 1, 1
    for k, s in zip(kernel_sizes, strides):
        jump *= s
        field += (k - 1) * jump
    return field


@wrong("patchgan_receptive_field", "the backward recursion run from the input side")
def rf_wrong_direction(kernel_sizes, strides):
    field = 1
    for k, s in zip(kernel_sizes, strides):
        field = (field - 1) * s + k
    return field


@wrong("patchgan_receptive_field", "starts from 0 pixels")
def rf_from_zero(kernel_sizes, strides):
    field, jump = 0, 1
    for k, s in zip(kernel_sizes, strides):
        field += (k - 1) * jump
        jump *= s
    return field


@wrong("patchgan_receptive_field", "product of the kernel sizes")
def rf_product(kernel_sizes, strides):
    out = 1
    for k in kernel_sizes:
        out *= k
    return out


@wrong("patchgan_receptive_field", "a string")
def rf_string(kernel_sizes, strides):
    field, jump = 1, 1
    for k, s in zip(kernel_sizes, strides):
        field += (k - 1) * jump
        jump *= s
    return f"{field}x{field}"


@wrong("patchgan_receptive_field", "calls the reference")
def rf_reference(kernel_sizes, strides):
    return dvl_helpers.vqgan.patchgan_receptive_field(kernel_sizes, strides)
