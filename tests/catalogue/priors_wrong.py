"""Wrong answers to 08_priors: every check must reject each one.

``CASES`` holds ``(check name, answer, what is wrong)``. Most are mistakes
learners make (a causal mask without its diagonal or transposed, top-k that
fills with 0 or keeps the smallest, temperature multiplying, argmax instead
of sampling, the wrong prefix, all positions sampled at once, cos(pi r),
swapped schedules, re-masking the most confident samples, decoded codes that
change, masks left after the last step, ...); a few are shortcuts the grader
must refuse (calling the course's reference implementation).
"""
import math

import torch
import torch.nn.functional as F

import dvl_helpers.priors as ref_priors
from dvl_helpers.priors import causal_mask as ref_causal_mask

CASES = []


def wrong(check, why):
    def register(answer):
        CASES.append((check, answer, why))
        return answer
    return register


# correct pieces the wrong answers below are built from
def _filter(logits, k):
    if k is None or k >= logits.shape[1]:
        return logits
    kth = logits.topk(k, dim=1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def _sample(logits, temperature=1.0, top_k=None, generator=None):
    probs = F.softmax(_filter(logits / temperature, top_k), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _schedule(r, kind="cosine"):
    return {"cosine": math.cos(math.pi / 2 * r), "linear": 1 - r, "square": 1 - r * r}[kind]


def _decode(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    b, length, k = logits.shape
    probs = torch.softmax(logits / temperature, dim=-1)
    sampled = torch.multinomial(probs.reshape(-1, k), 1, generator=generator).view(b, length)
    conf = probs.gather(-1, sampled[..., None]).squeeze(-1).masked_fill(~masked, float("inf"))
    remask = torch.zeros_like(masked)
    if num_to_mask > 0:
        remask = remask.scatter(1, conf.topk(num_to_mask, dim=1, largest=False).indices, True)
    return torch.where(masked & ~remask, sampled, tokens), remask


# ----------------------------------------------------------------------------- causal_mask

@wrong("causal_mask", "no diagonal: strict lower triangle")
def mask_no_diagonal(T):
    return torch.ones(T, T).tril(-1).bool()


@wrong("causal_mask", "transposed: upper triangle")
def mask_transposed(T):
    return torch.ones(T, T).triu().bool()


@wrong("causal_mask", "inverted: True where attention is forbidden")
def mask_inverted(T):
    return torch.ones(T, T, dtype=torch.bool).triu(1)


@wrong("causal_mask", "a float mask")
def mask_float(T):
    return torch.ones(T, T).tril()


@wrong("causal_mask", "calls the course's reference")
def mask_reference(T):
    return ref_causal_mask(T)


# ----------------------------------------------------------------------------- top_k_filter

@wrong("top_k_filter", "fills the removed logits with 0")
def topk_zero_fill(logits, k):
    k = min(k, logits.shape[1])
    kth = logits.topk(k, dim=1).values[:, -1:]
    return torch.where(logits >= kth, logits, torch.zeros_like(logits))


@wrong("top_k_filter", "keeps the k smallest")
def topk_smallest(logits, k):
    k = min(k, logits.shape[1])
    kth = logits.topk(k, dim=1, largest=False).values[:, -1:]
    return logits.masked_fill(logits > kth, float("-inf"))


@wrong("top_k_filter", "keeps exactly k with scatter: drops logits tied with the k-th")
def topk_exact_k(logits, k):
    k = min(k, logits.shape[1])
    idx = logits.topk(k, dim=1).indices
    out = torch.full_like(logits, float("-inf"))
    return out.scatter(1, idx, logits.gather(1, idx))


@wrong("top_k_filter", "<= instead of <: drops the k-th largest too")
def topk_le(logits, k):
    k = min(k, logits.shape[1])
    kth = logits.topk(k, dim=1).values[:, -1:]
    return logits.masked_fill(logits <= kth, float("-inf"))


@wrong("top_k_filter", "modifies logits in place")
def topk_in_place(logits, k):
    k = min(k, logits.shape[1])
    kth = logits.topk(k, dim=1).values[:, -1:]
    logits[logits < kth] = float("-inf")
    return logits


@wrong("top_k_filter", "filters along the batch dimension")
def topk_dim0(logits, k):
    k = min(k, logits.shape[0])
    kth = logits.topk(k, dim=0).values[-1:]
    return logits.masked_fill(logits < kth, float("-inf"))


@wrong("top_k_filter", "fills with a large negative number instead of -inf")
def topk_finite(logits, k):
    k = min(k, logits.shape[1])
    kth = logits.topk(k, dim=1).values[:, -1:]
    return logits.masked_fill(logits < kth, -1e9)


@wrong("top_k_filter", "the whole reference module")
def topk_reference(logits, k):
    return ref_priors.top_k_filter(logits, k)


# ----------------------------------------------------------------------------- sample_logits

@wrong("sample_logits", "argmax instead of sampling")
def sample_argmax(logits, temperature=1.0, top_k=None, generator=None):
    return _filter(logits / temperature, top_k).argmax(dim=1)


@wrong("sample_logits", "temperature multiplies the logits")
def sample_temperature_times(logits, temperature=1.0, top_k=None, generator=None):
    return _sample(logits * temperature * temperature, 1.0, top_k, generator)


@wrong("sample_logits", "temperature ignored")
def sample_no_temperature(logits, temperature=1.0, top_k=None, generator=None):
    return _sample(logits, 1.0, top_k, generator)


@wrong("sample_logits", "top_k ignored")
def sample_no_top_k(logits, temperature=1.0, top_k=None, generator=None):
    return _sample(logits, temperature, None, generator)


@wrong("sample_logits", "top-k that fills with 0 before the softmax")
def sample_top_k_zero(logits, temperature=1.0, top_k=None, generator=None):
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=1).values[:, -1:]
        logits = torch.where(logits >= kth, logits, torch.zeros_like(logits))
    return torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)


@wrong("sample_logits", "the global random generator")
def sample_global_rng(logits, temperature=1.0, top_k=None, generator=None):
    return _sample(logits, temperature, top_k, None)


@wrong("sample_logits", "softmax over the batch dimension")
def sample_softmax_dim0(logits, temperature=1.0, top_k=None, generator=None):
    probs = F.softmax(_filter(logits / temperature, top_k), dim=0)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@wrong("sample_logits", "every row drawn from the first row's logits")
def sample_first_row(logits, temperature=1.0, top_k=None, generator=None):
    probs = F.softmax(_filter(logits[:1] / temperature, top_k), dim=-1)
    return torch.multinomial(probs, logits.shape[0], replacement=True, generator=generator)[0]


@wrong("sample_logits", "samples probabilities as if they were logits (softmax twice)")
def sample_double_softmax(logits, temperature=1.0, top_k=None, generator=None):
    probs = F.softmax(F.softmax(_filter(logits / temperature, top_k), dim=-1), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@wrong("sample_logits", "returns a [B, 1] tensor")
def sample_keepdim(logits, temperature=1.0, top_k=None, generator=None):
    probs = F.softmax(_filter(logits / temperature, top_k), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


# ----------------------------------------------------------------------------- sample_autoregressive

@wrong("sample_autoregressive", "all positions sampled at once from one call")
def ar_all_at_once(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    codes = torch.zeros(batch_size, length, dtype=torch.long)
    logits = model(codes)
    out = torch.stack([_sample(logits[:, i], temperature, top_k, generator) for i in range(length)], 1)
    return out


@wrong("sample_autoregressive", "the prefix without a slot: model(codes[:, :i])[:, -1]")
def ar_short_prefix(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    codes = torch.zeros(batch_size, length, dtype=torch.long)
    for i in range(length):
        codes[:, i] = _sample(model(codes[:, :i])[:, -1], temperature, top_k, generator)
    return codes


@wrong("sample_autoregressive", "position i drawn from the logits of position i - 1")
def ar_off_by_one(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    codes = torch.zeros(batch_size, length, dtype=torch.long)
    for i in range(length):
        codes[:, i] = _sample(model(codes[:, :i + 1])[:, max(i - 1, 0)], temperature, top_k,
                              generator)
    return codes


@wrong("sample_autoregressive", "always the logits of position 0")
def ar_first_logits(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    codes = torch.zeros(batch_size, length, dtype=torch.long)
    for i in range(length):
        codes[:, i] = _sample(model(codes[:, :i + 1])[:, 0], temperature, top_k, generator)
    return codes


@wrong("sample_autoregressive", "the full-length tensor, always its last position's logits")
def ar_last_logits(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    codes = torch.zeros(batch_size, length, dtype=torch.long)
    for i in range(length):
        codes[:, i] = _sample(model(codes)[:, -1], temperature, top_k, generator)
    return codes


@wrong("sample_autoregressive", "temperature not passed on")
def ar_no_temperature(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    codes = torch.zeros(batch_size, length, dtype=torch.long)
    for i in range(length):
        codes[:, i] = _sample(model(codes[:, :i + 1])[:, i], 1.0, top_k, generator)
    return codes


@wrong("sample_autoregressive", "top_k not passed on")
def ar_no_top_k(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    codes = torch.zeros(batch_size, length, dtype=torch.long)
    for i in range(length):
        codes[:, i] = _sample(model(codes[:, :i + 1])[:, i], temperature, None, generator)
    return codes


@wrong("sample_autoregressive", "the global random generator")
def ar_global_rng(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    codes = torch.zeros(batch_size, length, dtype=torch.long)
    for i in range(length):
        codes[:, i] = _sample(model(codes[:, :i + 1])[:, i], temperature, top_k)
    return codes


@wrong("sample_autoregressive", "greedy decoding (argmax)")
def ar_greedy(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    codes = torch.zeros(batch_size, length, dtype=torch.long)
    for i in range(length):
        codes[:, i] = model(codes[:, :i + 1])[:, i].argmax(-1)
    return codes


@wrong("sample_autoregressive", "calls the course's reference")
def ar_reference(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    return ref_priors.sample_autoregressive(model, batch_size, length, temperature, top_k,
                                            generator)


# ----------------------------------------------------------------------------- maskgit_schedule

@wrong("maskgit_schedule", "cos(pi r): reaches -1 at r = 1")
def schedule_cos_pi(r, kind="cosine"):
    if kind == "cosine":
        return math.cos(math.pi * r)
    return {"linear": 1 - r, "square": 1 - r * r}[kind]


@wrong("maskgit_schedule", "linear and square swapped")
def schedule_swapped(r, kind="cosine"):
    if kind == "cosine":
        return math.cos(math.pi / 2 * r)
    return {"linear": 1 - r * r, "square": 1 - r}[kind]


@wrong("maskgit_schedule", "the decoded fraction instead of the masked fraction")
def schedule_decoded(r, kind="cosine"):
    return 1 - _schedule(r, kind)


@wrong("maskgit_schedule", "square as (1 - r)^2")
def schedule_square_wrong(r, kind="cosine"):
    if kind == "square":
        return (1 - r) ** 2
    return _schedule(r, kind)


@wrong("maskgit_schedule", "default kind linear")
def schedule_default_linear(r, kind="linear"):
    return _schedule(r, kind)


@wrong("maskgit_schedule", "an unknown kind falls back to cosine")
def schedule_silent(r, kind="cosine"):
    if kind == "linear":
        return 1 - r
    if kind == "square":
        return 1 - r * r
    return math.cos(math.pi / 2 * r)


@wrong("maskgit_schedule", "sin(pi r / 2)")
def schedule_sin(r, kind="cosine"):
    if kind == "cosine":
        return math.sin(math.pi / 2 * r)
    return _schedule(r, kind)


# ----------------------------------------------------------------------------- maskgit_decode_step

@wrong("maskgit_decode_step", "re-masks the most confident samples")
def decode_most_confident(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    b, length, k = logits.shape
    probs = torch.softmax(logits / temperature, dim=-1)
    sampled = torch.multinomial(probs.reshape(-1, k), 1, generator=generator).view(b, length)
    conf = probs.gather(-1, sampled[..., None]).squeeze(-1).masked_fill(~masked, -float("inf"))
    remask = torch.zeros_like(masked)
    if num_to_mask > 0:
        remask = remask.scatter(1, conf.topk(num_to_mask, dim=1).indices, True)
    return torch.where(masked & ~remask, sampled, tokens), remask


@wrong("maskgit_decode_step", "decoded positions re-sampled too")
def decode_resample_all(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    b, length, k = logits.shape
    probs = torch.softmax(logits / temperature, dim=-1)
    sampled = torch.multinomial(probs.reshape(-1, k), 1, generator=generator).view(b, length)
    conf = probs.gather(-1, sampled[..., None]).squeeze(-1).masked_fill(~masked, float("inf"))
    remask = torch.zeros_like(masked)
    if num_to_mask > 0:
        remask = remask.scatter(1, conf.topk(num_to_mask, dim=1, largest=False).indices, True)
    return torch.where(remask, tokens, sampled), remask


@wrong("maskgit_decode_step", "decoded positions compete for re-masking (no +inf confidence)")
def decode_all_compete(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    b, length, k = logits.shape
    probs = torch.softmax(logits / temperature, dim=-1)
    sampled = torch.multinomial(probs.reshape(-1, k), 1, generator=generator).view(b, length)
    sampled = torch.where(masked, sampled, tokens)
    conf = probs.gather(-1, sampled[..., None]).squeeze(-1)
    remask = torch.zeros_like(masked)
    if num_to_mask > 0:
        remask = remask.scatter(1, conf.topk(num_to_mask, dim=1, largest=False).indices, True)
    return torch.where(masked & ~remask, sampled, tokens), remask


@wrong("maskgit_decode_step", "num_to_mask taken as the number to decode")
def decode_count_inverted(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    keep = int(masked.sum(1).min()) - num_to_mask
    return _decode(logits, tokens, masked, keep, temperature, generator)


@wrong("maskgit_decode_step", "one too many re-masked")
def decode_one_more(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    return _decode(logits, tokens, masked, min(num_to_mask + 1, int(masked.sum(1).min())),
                   temperature, generator)


@wrong("maskgit_decode_step", "argmax instead of sampling")
def decode_argmax(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    probs = torch.softmax(logits / temperature, dim=-1)
    conf, sampled = probs.max(-1)
    conf = conf.masked_fill(~masked, float("inf"))
    remask = torch.zeros_like(masked)
    if num_to_mask > 0:
        remask = remask.scatter(1, conf.topk(num_to_mask, dim=1, largest=False).indices, True)
    return torch.where(masked & ~remask, sampled, tokens), remask


@wrong("maskgit_decode_step", "temperature multiplies")
def decode_temperature_times(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    return _decode(logits * temperature * temperature, tokens, masked, num_to_mask, 1.0, generator)


@wrong("maskgit_decode_step", "returns the positions just decoded as the mask")
def decode_mask_inverted(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    new, remask = _decode(logits, tokens, masked, num_to_mask, temperature, generator)
    return new, masked & ~remask


@wrong("maskgit_decode_step", "writes into tokens and masked in place")
def decode_in_place(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    new, remask = _decode(logits, tokens, masked, num_to_mask, temperature, generator)
    tokens.copy_(new)
    masked.copy_(remask)
    return tokens, masked


@wrong("maskgit_decode_step", "the global random generator")
def decode_global_rng(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    return _decode(logits, tokens, masked, num_to_mask, temperature, None)


@wrong("maskgit_decode_step", "confidence from one random position per row (a broadcasting slip)")
def decode_wrong_gather(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    b, length, k = logits.shape
    probs = torch.softmax(logits / temperature, dim=-1)
    sampled = torch.multinomial(probs.reshape(-1, k), 1, generator=generator).view(b, length)
    conf = probs[:, 0].gather(-1, sampled).masked_fill(~masked, float("inf"))
    remask = torch.zeros_like(masked)
    if num_to_mask > 0:
        remask = remask.scatter(1, conf.topk(num_to_mask, dim=1, largest=False).indices, True)
    return torch.where(masked & ~remask, sampled, tokens), remask


# ----------------------------------------------------------------------------- maskgit_generate

def _generate(model, batch_size, length, steps, kind="cosine", temperature=1.0, generator=None,
              schedule=_schedule, progress=lambda s, steps: s / steps, clamp=True,
              write_mask=True, decode=_decode, floor=math.floor):
    tokens = torch.full((batch_size, length), model.mask_id, dtype=torch.long)
    masked = torch.ones(batch_size, length, dtype=torch.bool)
    n = length
    for s in range(1, steps + 1):
        if n == 0:
            break
        target = floor(length * schedule(progress(s, steps), kind))
        n = max(0, min(target, n - 1)) if clamp else max(0, min(target, n))
        tokens, masked = decode(model(tokens), tokens, masked, n, temperature, generator)
        if write_mask:
            tokens = tokens.masked_fill(masked, model.mask_id)
    return tokens


@wrong("maskgit_generate", "cos(pi r) schedule")
def gen_cos_pi(model, batch_size, length, steps, kind="cosine", temperature=1.0, generator=None):
    return _generate(model, batch_size, length, steps, kind, temperature, generator,
                     schedule=lambda r, kind: schedule_cos_pi(r, kind))


@wrong("maskgit_generate", "linear and square swapped")
def gen_swapped(model, batch_size, length, steps, kind="cosine", temperature=1.0, generator=None):
    return _generate(model, batch_size, length, steps, kind, temperature, generator,
                     schedule=schedule_swapped)


@wrong("maskgit_generate", "progress (s - 1) / steps: masks left after the last step")
def gen_masks_left(model, batch_size, length, steps, kind="cosine", temperature=1.0, generator=None):
    return _generate(model, batch_size, length, steps, kind, temperature, generator,
                     progress=lambda s, steps: (s - 1) / steps)


@wrong("maskgit_generate", "no 'at least one decoded per step' rule")
def gen_no_clamp(model, batch_size, length, steps, kind="cosine", temperature=1.0, generator=None):
    return _generate(model, batch_size, length, steps, kind, temperature, generator, clamp=False)


@wrong("maskgit_generate", "re-masked positions keep their samples: the model sees no mask token")
def gen_no_mask_token(model, batch_size, length, steps, kind="cosine", temperature=1.0,
                      generator=None):
    def decode(logits, tokens, masked, n, temperature, generator):
        b, length_, k = logits.shape
        probs = torch.softmax(logits / temperature, dim=-1)
        sampled = torch.multinomial(probs.reshape(-1, k), 1, generator=generator).view(b, length_)
        conf = probs.gather(-1, sampled[..., None]).squeeze(-1).masked_fill(~masked, float("inf"))
        remask = torch.zeros_like(masked)
        if n > 0:
            remask = remask.scatter(1, conf.topk(n, dim=1, largest=False).indices, True)
        return torch.where(masked, sampled, tokens), remask
    return _generate(model, batch_size, length, steps, kind, temperature, generator,
                     write_mask=False, decode=decode)


@wrong("maskgit_generate", "decodes with a step that re-samples decoded codes")
def gen_resample(model, batch_size, length, steps, kind="cosine", temperature=1.0, generator=None):
    return _generate(model, batch_size, length, steps, kind, temperature, generator,
                     decode=decode_resample_all)


@wrong("maskgit_generate", "re-masks the most confident samples")
def gen_most_confident(model, batch_size, length, steps, kind="cosine", temperature=1.0,
                       generator=None):
    return _generate(model, batch_size, length, steps, kind, temperature, generator,
                     decode=decode_most_confident)


@wrong("maskgit_generate", "ceil instead of floor")
def gen_ceil(model, batch_size, length, steps, kind="cosine", temperature=1.0, generator=None):
    return _generate(model, batch_size, length, steps, kind, temperature, generator,
                     floor=math.ceil)


@wrong("maskgit_generate", "temperature not passed on")
def gen_no_temperature(model, batch_size, length, steps, kind="cosine", temperature=1.0,
                       generator=None):
    return _generate(model, batch_size, length, steps, kind, 1.0, generator)


@wrong("maskgit_generate", "the global random generator")
def gen_global_rng(model, batch_size, length, steps, kind="cosine", temperature=1.0,
                   generator=None):
    return _generate(model, batch_size, length, steps, kind, temperature, None)


@wrong("maskgit_generate", "the schedule's kind ignored (always cosine)")
def gen_kind_ignored(model, batch_size, length, steps, kind="cosine", temperature=1.0,
                     generator=None):
    return _generate(model, batch_size, length, steps, "cosine", temperature, generator)


@wrong("maskgit_generate", "calls the course's reference")
def gen_reference(model, batch_size, length, steps, kind="cosine", temperature=1.0,
                  generator=None):
    return ref_priors.maskgit_generate(model, batch_size, length, steps, kind, temperature,
                                       generator)
