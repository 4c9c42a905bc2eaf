"""Different but correct answers to 08_priors: every check must accept each one.

``CASES`` holds ``(check name, answer, how it differs)``: other tensor routes
(comparisons of aranges, ``sort``, ``kthvalue``), other ways of drawing
(Gumbel-max, inverse CDF with ``searchsorted``), other ways of feeding the
model (a growing prefix, the full-length tensor with placeholders), loops
instead of batched ops.
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


# ----------------------------------------------------------------------------- causal_mask

@right("causal_mask", "torch.tril of ones")
def mask_tril(T):
    return torch.tril(torch.ones(T, T)).bool()


@right("causal_mask", "compares aranges")
def mask_arange(T):
    i = torch.arange(T)
    return i[None, :] <= i[:, None]


@right("causal_mask", "the complement of the strict upper triangle")
def mask_not_triu(T):
    return ~torch.ones(T, T, dtype=torch.bool).triu(1)


# ----------------------------------------------------------------------------- top_k_filter

@right("top_k_filter", "threshold at the k-th largest from topk (nanoGPT)")
def topk_nanogpt(logits, k):
    k = min(k, logits.shape[-1])
    v, _ = torch.topk(logits, k)
    out = logits.clone()
    out[out < v[:, [-1]]] = -float("inf")
    return out


@right("top_k_filter", "threshold from a descending sort, torch.where")
def topk_sort(logits, k):
    k = min(k, logits.shape[1])
    kth = logits.sort(dim=1, descending=True).values[:, k - 1:k]
    return torch.where(logits >= kth, logits, torch.full_like(logits, float("-inf")))


@right("top_k_filter", "kthvalue of the negated logits")
def topk_kthvalue(logits, k):
    if k >= logits.shape[1]:
        return logits.clone()
    kth = -(-logits).kthvalue(k, dim=1, keepdim=True).values
    return logits.masked_fill(logits < kth, -math.inf)


# ----------------------------------------------------------------------------- sample_logits

def _filter(logits, k):
    if k is None or k >= logits.shape[1]:
        return logits
    kth = logits.topk(k, dim=1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


@right("sample_logits", "torch.multinomial")
def sample_multinomial(logits, temperature=1.0, top_k=None, generator=None):
    probs = F.softmax(_filter(logits / temperature, top_k), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@right("sample_logits", "Gumbel-max with uniform noise from the generator")
def sample_gumbel_max(logits, temperature=1.0, top_k=None, generator=None):
    scaled = _filter(logits, top_k) / temperature
    u = torch.rand(scaled.shape, generator=generator).clamp(1e-20, 1 - 1e-7)
    return (scaled - torch.log(-torch.log(u))).argmax(dim=1)


@right("sample_logits", "inverse CDF: searchsorted on the cumulative probabilities")
def sample_inverse_cdf(logits, temperature=1.0, top_k=None, generator=None):
    if top_k is not None:
        logits = _filter(logits, top_k)
    probs = torch.softmax(logits.double() / temperature, dim=1)
    cdf = probs.cumsum(1)
    u = torch.rand(logits.shape[0], 1, generator=generator, dtype=torch.float64) * cdf[:, -1:]
    out = torch.searchsorted(cdf, u).squeeze(1)
    return out.clamp(max=logits.shape[1] - 1).long()


# ----------------------------------------------------------------------------- sample_autoregressive

@right("sample_autoregressive", "preallocated codes, model(codes[:, :i + 1])[:, i]")
def ar_prealloc(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    device = next(model.parameters()).device
    codes = torch.zeros(batch_size, length, dtype=torch.long, device=device)
    with torch.no_grad():
        for i in range(length):
            logits = model(codes[:, :i + 1])[:, i]
            codes[:, i] = sample_multinomial(logits, temperature, top_k, generator)
    return codes


@right("sample_autoregressive", "a growing prefix with a placeholder appended, torch.cat")
def ar_cat(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    codes = torch.empty(batch_size, 0, dtype=torch.long)
    for _ in range(length):
        placeholder = torch.zeros(batch_size, 1, dtype=torch.long)
        logits = model(torch.cat([codes, placeholder], dim=1))[:, -1]
        nxt = sample_gumbel_max(logits, temperature, top_k, generator)
        codes = torch.cat([codes, nxt[:, None]], dim=1)
    return codes


@right("sample_autoregressive", "the full-length tensor every time (the model is causal)")
def ar_full_length(model, batch_size, length, temperature=1.0, top_k=None, generator=None):
    codes = torch.zeros(batch_size, length, dtype=torch.long)
    for i in range(length):
        logits = model(codes.clone())[:, i, :]
        codes[:, i] = sample_inverse_cdf(logits, temperature, top_k, generator)
    return codes


# ----------------------------------------------------------------------------- maskgit_schedule

@right("maskgit_schedule", "math functions")
def schedule_math(r, kind="cosine"):
    if kind == "cosine":
        return math.cos(math.pi * r / 2)
    if kind == "linear":
        return 1 - r
    if kind == "square":
        return 1 - r ** 2
    raise ValueError(f"unknown kind {kind!r}")


@right("maskgit_schedule", "torch on a tensor, returns a 0-dim tensor")
def schedule_torch(r, kind="cosine"):
    r = torch.as_tensor(r, dtype=torch.float64)
    table = {"cosine": lambda: torch.cos(r * math.pi / 2), "linear": lambda: 1 - r,
             "square": lambda: 1 - r * r}
    return table[kind]()


@right("maskgit_schedule", "sin of the complementary angle, assert on the kind")
def schedule_sin(r, kind="cosine"):
    assert kind in ("cosine", "linear", "square"), kind
    if kind == "cosine":
        return math.sin(math.pi / 2 * (1 - r))
    return 1 - r if kind == "linear" else (1 - r) * (1 + r)


# ----------------------------------------------------------------------------- maskgit_decode_step

def _decode_reference(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    b, length, k = logits.shape
    probs = torch.softmax(logits / temperature, dim=-1)
    sampled = torch.multinomial(probs.reshape(-1, k), 1, generator=generator).view(b, length)
    conf = probs.gather(-1, sampled[..., None]).squeeze(-1)
    conf = torch.where(masked, conf, torch.full_like(conf, float("inf")))
    remask = torch.zeros_like(masked)
    if num_to_mask > 0:
        idx = conf.topk(num_to_mask, dim=1, largest=False).indices
        remask = remask.scatter(1, idx, True)
    new = torch.where(masked & ~remask, sampled, tokens)
    return new, remask


right("maskgit_decode_step", "multinomial, topk(largest=False), scatter")(_decode_reference)


@right("maskgit_decode_step", "Gumbel-max draws, ranks by argsort, re-masked tokens set to -1")
def decode_argsort(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    log_p = F.log_softmax(logits / temperature, dim=-1)
    u = torch.rand(logits.shape, generator=generator).clamp(1e-20, 1 - 1e-7)
    sampled = (log_p - torch.log(-torch.log(u))).argmax(-1)
    conf = log_p.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)            # log-probability
    conf = conf.masked_fill(~masked, math.inf)
    rank = conf.argsort(dim=1).argsort(dim=1)                              # 0: least confident
    remask = rank < num_to_mask
    out = tokens.clone()
    out[masked] = sampled[masked]
    out[remask] = -1
    return out, remask


@right("maskgit_decode_step", "a Python loop over rows")
def decode_loop(logits, tokens, masked, num_to_mask, temperature=1.0, generator=None):
    out_tokens, out_masked = tokens.clone(), torch.zeros_like(masked)
    for row in range(logits.shape[0]):
        probs = torch.softmax(logits[row] / temperature, dim=-1)            # [L, K]
        sampled = torch.multinomial(probs, 1, generator=generator)[:, 0]
        conf = probs[torch.arange(len(sampled)), sampled]
        candidates = masked[row].nonzero().flatten()
        order = candidates[conf[candidates].argsort()]
        out_tokens[row, candidates] = sampled[candidates]
        keep_masked = order[:num_to_mask]
        out_tokens[row, keep_masked] = tokens[row, keep_masked]
        out_masked[row, keep_masked] = True
    return out_tokens, out_masked


# ----------------------------------------------------------------------------- maskgit_generate

@right("maskgit_generate", "floor with math, min(previous - 1), mask_id written back")
def generate_reference(model, batch_size, length, steps, kind="cosine", temperature=1.0,
                       generator=None):
    device = next(model.parameters()).device
    tokens = torch.full((batch_size, length), model.mask_id, dtype=torch.long, device=device)
    masked = torch.ones(batch_size, length, dtype=torch.bool, device=device)
    n = length
    with torch.no_grad():
        for s in range(1, steps + 1):
            if n == 0:
                break
            n = max(0, min(math.floor(length * schedule_math(s / steps, kind)), n - 1))
            tokens, masked = _decode_reference(model(tokens), tokens, masked, n, temperature,
                                               generator)
            tokens[masked] = model.mask_id
    return tokens


@right("maskgit_generate", "counts from a torch schedule, loops over every step, argsort decode")
def generate_torch_counts(model, batch_size, length, steps, kind="cosine", temperature=1.0,
                          generator=None):
    tokens = torch.full((batch_size, length), model.mask_id)
    masked = tokens == model.mask_id
    remaining = length
    for s in range(steps):
        frac = schedule_torch((s + 1) / steps, kind)
        target = int(torch.floor(length * frac).clamp(min=0).item())
        target = max(0, min(target, remaining - 1))
        tokens, masked = decode_argsort(model(tokens), tokens, masked, target, temperature,
                                        generator)
        tokens = torch.where(masked, torch.full_like(tokens, model.mask_id), tokens)
        remaining = target
    return tokens


@right("maskgit_generate", "stops once nothing is masked, decodes with a row loop")
def generate_loop(model, batch_size, length, steps, kind="cosine", temperature=1.0,
                  generator=None):
    tokens = torch.full((batch_size, length), model.mask_id, dtype=torch.long)
    masked = torch.ones_like(tokens, dtype=torch.bool)
    for s in range(1, steps + 1):
        left = int(masked[0].sum())
        if left == 0:
            break
        n = int(length * schedule_sin(s / steps, kind))
        n = min(max(n, 0), left - 1)
        tokens, masked = decode_loop(model(tokens), tokens, masked, n, temperature, generator)
        tokens = tokens.masked_fill(masked, model.mask_id)
    return tokens
