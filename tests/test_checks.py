"""Every checker both ways: it passes the reference, fails plausible wrong answers, and spots the stub.

WRONG lists, for every registered exercise, at least one mistake students really make. A new
exercise without an entry here fails ``test_every_exercise_has_wrong_answers``.
"""
import math
import re

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from course_lib.generators.mask_schedule import mask_ratio
from course_lib.notebook.checks import evaluate, exercises


def _stub(*args, **kwargs):
    raise NotImplementedError()


WRONG = {
    "uint8_to_float": {
        "divides by 256": lambda x: x.permute(0, 3, 1, 2).float() / 256,
        "keeps channels last": lambda x: x.float() / 255,
        "forgets to scale": lambda x: x.permute(0, 3, 1, 2).float(),
        "reshapes instead of permuting": lambda x: x.reshape(x.shape[0], x.shape[3], x.shape[1], x.shape[2]).float() / 255,
    },
    "patchify": {
        "channels first inside a patch": lambda x, p: rearrange(x, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p),
        "column-major patch order": lambda x, p: rearrange(x, "b c (h p1) (w p2) -> b (w h) (p1 p2 c)", p1=p, p2=p),
        "plain reshape": lambda x, p: x.reshape(x.shape[0], -1, p * p * x.shape[1]),
    },
    "unpatchify": {
        "width and height swapped": lambda t, p, h, w: rearrange(t, "b (w h) (p1 p2 c) -> b c (h p1) (w p2)", h=h // p, p1=p, p2=p),
        "channels first inside a patch": lambda t, p, h, w: rearrange(t, "b (h w) (c p1 p2) -> b c (h p1) (w p2)", h=h // p, p1=p, p2=p),
        "plain reshape": lambda t, p, h, w: t.reshape(t.shape[0], -1, h, w),
    },
    "nearest_centroid": {
        "largest dot product": lambda x, c: (x @ c.T).argmax(1),
        "farthest centroid": lambda x, c: torch.cdist(x, c).argmax(1),
        "forgets the ||c||^2 term": lambda x, c: ((x ** 2).sum(1, keepdim=True) - 2 * x @ c.T).argmin(1),
        "returns distances": lambda x, c: torch.cdist(x, c).min(1).values,
    },
    "reconstruction_loss": {
        "sum instead of mean": lambda x, y: ((x - y) ** 2).sum(),
        "L1 instead of L2": lambda x, y: (x - y).abs().mean(),
        "per-image, not averaged": lambda x, y: ((x - y) ** 2).flatten(1).mean(1),
    },
    "psnr": {
        "one MSE for the whole batch": lambda x, y: 10 * torch.log10(1 / ((x - y) ** 2).mean()).expand(len(x)),
        "natural log": lambda x, y: 10 * torch.log(1 / ((x - y) ** 2).flatten(1).mean(1)),
        "20 log10 of 1 / MSE": lambda x, y: 20 * torch.log10(1 / ((x - y) ** 2).flatten(1).mean(1)),
        "8-bit peak on [0, 1] images": lambda x, y: 10 * torch.log10(255 ** 2 / ((x - y) ** 2).flatten(1).mean(1)),
    },
    "nearest_code": {
        "largest dot product": lambda z, e: (z @ e.T).argmax(-1),
        "forgets the ||e||^2 term": lambda z, e: (-2 * z @ e.T).argmin(-1),
        "returns the code vectors": lambda z, e: e[torch.cdist(z.reshape(-1, z.shape[-1]), e).argmin(-1)].reshape(z.shape),
    },
    "straight_through": {
        "returns z_q as is": lambda z, z_q: z_q,
        "no detach": lambda z, z_q: z + (z_q - z),
        "detaches everything": lambda z, z_q: z_q.detach(),
        "returns z": lambda z, z_q: z,
    },
    "vq_loss": {
        "beta on the codebook term (taming legacy)": lambda z, z_q, beta: (
            beta * F.mse_loss(z_q, z.detach()), F.mse_loss(z, z_q.detach())),
        "no stop-gradient": lambda z, z_q, beta: (F.mse_loss(z_q, z), beta * F.mse_loss(z, z_q)),
        "terms swapped": lambda z, z_q, beta: (beta * F.mse_loss(z, z_q.detach()), F.mse_loss(z_q, z.detach())),
        "forgets beta": lambda z, z_q, beta: (F.mse_loss(z_q, z.detach()), F.mse_loss(z, z_q.detach())),
    },
    "fsq_quantize": {
        "no offset for even levels": lambda z, levels: _fsq_wrong(z, levels, offset=False),
        "plain round, no straight-through": lambda z, levels: _fsq_wrong(z, levels, ste=False),
        "not normalized to [-1, 1]": lambda z, levels: _fsq_wrong(z, levels, normalize=False),
    },
    "codes_to_indices": {
        "digits weighted from the other end": lambda c, levels: _digits(c, levels) @ _basis(levels[::-1]).flip(0),
        "forgets to shift the digits": lambda c, levels: (c * torch.tensor(levels) // 2).round().long() @ _basis(levels),
    },
    "indices_to_codes": {
        "digits not shifted to be centred": lambda i, levels: ((i[..., None] // _basis(levels)) % torch.tensor(levels)).float() / (torch.tensor(levels) // 2),
        "integer codes, not normalized": lambda i, levels: (((i[..., None] // _basis(levels)) % torch.tensor(levels)) - torch.tensor(levels) // 2).float(),
    },
    "reparameterize": {
        "uses the variance as std": lambda m, lv, eps: m + lv.exp() * eps,
        "uses logvar as std": lambda m, lv, eps: m + lv * eps,
        "forgets the mean": lambda m, lv, eps: (0.5 * lv).exp() * eps,
    },
    "gaussian_kl": {
        "mean over every element": lambda m, lv: (0.5 * (m ** 2 + lv.exp() - 1 - lv)).mean(),
        "sum over the batch too": lambda m, lv: (0.5 * (m ** 2 + lv.exp() - 1 - lv)).sum(),
        "missing the 1/2": lambda m, lv: (m ** 2 + lv.exp() - 1 - lv).flatten(1).sum(1).mean(),
        "sign of logvar flipped": lambda m, lv: (0.5 * (m ** 2 + lv.exp() - 1 + lv)).flatten(1).sum(1).mean(),
    },
    "next_token_loss": {
        "no shift": lambda lo, s: F.cross_entropy(lo.flatten(0, 1), s.flatten()),
        "shifted the wrong way": lambda lo, s: F.cross_entropy(lo[:, 1:].flatten(0, 1), s[:, :-1].flatten()),
        "summed, not averaged": lambda lo, s: F.cross_entropy(lo[:, :-1].flatten(0, 1), s[:, 1:].flatten(),
                                                              reduction="sum"),
        "mean of per-sequence sums": lambda lo, s: F.cross_entropy(lo[:, :-1].flatten(0, 1), s[:, 1:].flatten(),
                                                                   reduction="sum") / len(s),
    },
    "sample_step": {
        "multiplies by the temperature": lambda lo, t, k, generator: _draw(lo * t, k, generator),
        "ignores top_k": lambda lo, t, k, generator: _draw(lo / t, None, generator),
        "index inside the top k": lambda lo, t, k, generator: _draw_in_top_k(lo / t, k, generator),
        "greedy": lambda lo, t, k, generator: lo.argmax(-1),
    },
    "cfg_logits": {
        "pushes from the conditional": lambda c, u, s: c + s * (c - u),
        "pushes the wrong way": lambda c, u, s: u + s * (u - c),
        "ignores the scale": lambda c, u, s: c,
    },
    "interpolant": {
        "t = 0 is noise": lambda d, n, t: (t.view(-1, *[1] * (d.ndim - 1)) * d + (1 - t.view(-1, *[1] * (d.ndim - 1))) * n,
                                           d - n),
        "velocity points to the data": lambda d, n, t: (_path(d, n, t), d - n),
        "noise as the target": lambda d, n, t: (_path(d, n, t), n),
        "variance-preserving path": lambda d, n, t: ((1 - _t(t, d)).sqrt() * d + _t(t, d).sqrt() * n, n - d),
        "t broadcast over the last axis": lambda d, n, t: ((1 - t.mean()) * d + t.mean() * n, n - d),
    },
    "euler_step": {
        "steps the wrong way": lambda x, v, t, t_next: x + (t - t_next) * v,
        "forgets the step size": lambda x, v, t, t_next: x - v,
        "scales by t_next alone": lambda x, v, t, t_next: x - t_next * v,
    },
    "cfg_velocity": {
        "pushes from the conditional": lambda c, u, s: c + s * (c - u),
        "pushes the wrong way": lambda c, u, s: u + s * (u - c),
        "ignores the scale": lambda c, u, s: c,
        "averages the two": lambda c, u, s: (c + u) / 2,
    },
    "hinge_losses": {
        "no 0.5 factor": lambda r, f: (F.relu(1 - r).mean() + F.relu(1 + f).mean(), -f.mean()),
        "signs of the hinges swapped": lambda r, f: (0.5 * (F.relu(1 + r).mean() + F.relu(1 - f).mean()), -f.mean()),
        "generator maximizes the hinge": lambda r, f: (0.5 * (F.relu(1 - r).mean() + F.relu(1 + f).mean()),
                                                       F.relu(1 - f).mean() * 0 + f.mean()),
        "non-saturating softplus instead of hinge": lambda r, f: (0.5 * (F.softplus(-r).mean() + F.softplus(f).mean()),
                                                                  -f.mean()),
        "one mean over both batches": lambda r, f: (torch.cat([F.relu(1 - r).flatten(), F.relu(1 + f).flatten()]).mean(),
                                                    -f.mean()),
    },
    "adaptive_weight": {
        "ratio upside down": lambda rec, gan, w, delta=1e-4: _grad_norm(gan, w) / (_grad_norm(rec, w) + delta),
        "no delta": lambda rec, gan, w, delta=1e-4: _grad_norm(rec, w) / _grad_norm(gan, w),
        "squared norms": lambda rec, gan, w, delta=1e-4: _grad_norm(rec, w) ** 2 / (_grad_norm(gan, w) ** 2 + delta),
        "ratio of the losses": lambda rec, gan, w, delta=1e-4: (rec / (gan.abs() + delta)).detach(),
        "not detached": lambda rec, gan, w, delta=1e-4: _grad_norm(rec, w, graph=True) / (_grad_norm(gan, w, graph=True) + delta),
    },
    "perceptual_distance": {
        "no unit normalization": lambda fx, fy: sum(((x - y) ** 2).sum(1).mean((1, 2)) for x, y in zip(fx, fy)),
        "normalized over positions": lambda fx, fy: sum(((x / x.flatten(2).norm(dim=2)[..., None, None]
                                                          - y / y.flatten(2).norm(dim=2)[..., None, None]) ** 2
                                                         ).sum(1).mean((1, 2)) for x, y in zip(fx, fy)),
        "mean over channels": lambda fx, fy: sum(((F.normalize(x, dim=1) - F.normalize(y, dim=1)) ** 2).mean(1).mean((1, 2))
                                                 for x, y in zip(fx, fy)),
        "sum over positions": lambda fx, fy: sum(((F.normalize(x, dim=1) - F.normalize(y, dim=1)) ** 2).sum((1, 2, 3))
                                                 for x, y in zip(fx, fy)),
        "only the last layer": lambda fx, fy: ((F.normalize(fx[-1], dim=1) - F.normalize(fy[-1], dim=1)) ** 2
                                                ).sum(1).mean((1, 2)),
    },
    "mask_count": {
        "progress step / steps": lambda t, T, n, now, s: _count(t, T, n, now, s, progress=t / T),
        "no clamps": lambda t, T, n, now, s: _count(t, T, n, now, s, clamp_low=False, clamp_high=False),
        "no one-per-remaining-step floor": lambda t, T, n, now, s: _count(t, T, n, now, s, clamp_low=False),
        "does not reveal one every step": lambda t, T, n, now, s: _count(t, T, n, now, s, clamp_high=False),
        "ceil instead of floor": lambda t, T, n, now, s: _count(t, T, n, now, s, rounding=math.ceil),
        "counts the revealed tokens": lambda t, T, n, now, s: n - _count(t, T, n, now, s),
    },
    "remask": {
        "re-masks the most confident": lambda s, c, m, k, i: _remask(s, -c, m, k, i),
        "known positions can be re-masked": lambda s, c, m, k, i: _remask(s, c, torch.ones_like(m), k, i),
        "one count for the whole batch": lambda s, c, m, k, i: _remask(s, c, m, k[:1].expand(len(k)), i),
        "argsort once, not ranks": lambda s, c, m, k, i: s.masked_fill(
            c.masked_fill(~m, math.inf).argsort(1) < k[:, None], i),
        "re-masks one too many": lambda s, c, m, k, i: _remask(s, c, m, k + 1, i),
    },
    "residual_step": {
        "samples the residual instead of averaging": lambda r, f, e, k, phi: _step(r, f, e, k, phi, down="nearest"),
        "upsamples to the nearest cell": lambda r, f, e, k, phi: _step(r, f, e, k, phi, up="nearest"),
        "forgets phi": lambda r, f, e, k, phi: _step(r, f, e, k, torch.nn.Identity()),
        "residual keeps the codes unrefined": lambda r, f, e, k, phi: _step(r, f, e, k, phi, subtract_raw=True),
        "forgets to subtract from the residual": lambda r, f, e, k, phi: _step(r, f, e, k, phi)[:2] + (r,),
    },
    "block_causal_mask": {
        "token-causal, not scale-causal": lambda s: torch.ones(_length(s), _length(s)).tril().bool(),
        "strictly coarser scales only": lambda s: _levels(s)[:, None] > _levels(s)[None, :],
        "keys and queries swapped": lambda s: _levels(s)[:, None] <= _levels(s)[None, :],
        "every scale sees every scale": lambda s: torch.ones(_length(s), _length(s), dtype=torch.bool),
    },
    "next_scale_inputs": {
        "only the last scale's contribution": lambda q, grids: _inputs(q, grids, running=False),
        "bicubic, not area": lambda q, grids: _inputs(q, grids, mode="bicubic"),
        "the reconstruction after the scale itself": lambda q, grids: _inputs(q, grids, shift=1),
        "skips phi": lambda q, grids: _inputs(q, grids, phi=False),
    },
}


def _step(residual, f, codebook, side, phi, down="area", up="bicubic", subtract_raw=False):
    small = F.interpolate(residual, size=(side, side), mode=down)
    grid = torch.cdist(rearrange(small, "b c h w -> b h w c").flatten(0, 2), codebook).argmin(1)
    grid = grid.view(small.shape[0], side, side)
    codes = rearrange(codebook[grid], "b h w c -> b c h w")
    raw = F.interpolate(codes, size=residual.shape[-2:], mode=up) if side != residual.shape[-1] else codes
    h = phi(raw)
    return grid, f + h, residual - (raw if subtract_raw else h)


def _levels(scales):
    return torch.cat([torch.full((k * k,), i) for i, k in enumerate(scales)])


def _length(scales):
    return sum(k * k for k in scales)


def _inputs(quantizer, grids, running=True, mode="area", shift=0, phi=True):
    scales, side = quantizer.scales, quantizer.scales[-1]
    raw = [F.interpolate(rearrange(quantizer.codebook[g], "b h w c -> b c h w"), size=(side, side), mode="bicubic")
           for g in grids]
    parts = [quantizer.contribution(g, i) for i, g in enumerate(grids)] if phi else raw
    sums = [sum(parts[:i + 1]) for i in range(len(parts))]  # the running reconstruction after each scale
    chosen = sums if running else parts
    return [F.interpolate(chosen[i + shift], size=(scales[i + 1],) * 2, mode=mode) for i in range(len(scales) - 1)]


def _count(step, steps, n, masked_now, schedule, progress=None, rounding=math.floor, clamp_low=True, clamp_high=True):
    r = (step + 1) / steps if progress is None else progress
    count = rounding(n * float(mask_ratio(r, schedule)) + (1e-9 if rounding is math.floor else -1e-9))
    count = max(count, steps - 1 - step) if clamp_low else count
    count = min(count, masked_now - 1) if clamp_high else count
    return max(count, 0)


def _remask(sampled, confidence, is_masked, keep, mask_id):
    ranks = confidence.masked_fill(~is_masked, math.inf).argsort(1).argsort(1)
    return sampled.masked_fill(ranks < keep[:, None], mask_id)


def _draw(logits, k, generator):
    if k is not None:
        logits = logits.masked_fill(logits < logits.topk(k, dim=-1).values[:, -1:], float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def _draw_in_top_k(logits, k, generator):
    values = logits.topk(k or logits.shape[-1], dim=-1).values  # forgets to map back to vocabulary indices
    return torch.multinomial(values.softmax(-1), 1, generator=generator)[:, 0]
def _t(t, data):
    return t.reshape(-1, *[1] * (data.ndim - 1))


def _path(data, noise, t):
    return (1 - _t(t, data)) * data + _t(t, data) * noise


def _grad_norm(loss, weight, graph=False):
    (grad,) = torch.autograd.grad(loss, weight, retain_graph=True, create_graph=graph)
    return grad.norm() if graph else grad.norm().detach()


def _fsq_wrong(z, levels, offset=True, ste=True, normalize=True):
    levels_t = torch.tensor(levels, dtype=z.dtype)
    half_l = (levels_t - 1) * (1 + 1e-3) / 2
    shift_by = torch.where(levels_t % 2 == 0, 0.5, 0.0) if offset else torch.zeros_like(levels_t)
    bounded = torch.tanh(z + torch.atanh(shift_by / half_l)) * half_l - shift_by
    rounded = bounded + (bounded.round() - bounded).detach() if ste else bounded.round()
    return rounded / (levels_t // 2) if normalize else rounded


def _basis(levels):
    return torch.cumprod(torch.tensor([1] + list(levels[:-1])), 0)


def _digits(codes, levels):
    half = torch.tensor(levels) // 2
    return (codes * half + half).round().long()

ALL = [e.name for e in exercises()]


def test_every_exercise_has_wrong_answers():
    missing = sorted(set(ALL) - set(WRONG))
    assert not missing, f"add plausible wrong answers for: {missing}"


@pytest.mark.parametrize("name", ALL)
def test_reference_passes(name):
    from course_lib.notebook.checks import get_exercise
    result = evaluate(name, get_exercise(name).reference)
    assert result.status == "pass", result.reason


@pytest.mark.parametrize("name", ALL)
def test_stub_is_not_implemented(name):
    assert evaluate(name, _stub).status == "not implemented"


@pytest.mark.parametrize("name,mistake", [(n, m) for n in WRONG for m in WRONG[n]])
def test_plausible_wrong_answer_fails(name, mistake):
    result = evaluate(name, WRONG[name][mistake])
    assert result.status == "fail", f"{name} passed a wrong answer: {mistake}"
    assert result.reason.startswith("case ")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("seed", [1, 2])
def test_fresh_cases_still_separate_right_from_wrong(name, seed):
    from course_lib.notebook.checks import get_exercise
    assert evaluate(name, get_exercise(name).reference, seed=seed).status == "pass"
    for mistake, wrong in WRONG.get(name, {}).items():
        assert evaluate(name, wrong, seed=seed).status == "fail", mistake


# code in a hint: a call or an attribute (floor(, torch., .detach), indexing (row[b]), an einops
# pattern, arithmetic between two operands ((1 - t) * x0, noise - data), a bitwise not, and the names
# of the library functions that are themselves the algorithm (argsort of argsort)
CODE_IN_HINTS = {
    "a function call": r"[A-Za-z_][\w.]*\(",
    "an attribute or module": r"(?<![.\w])(?!e\.g\.|i\.e\.)[A-Za-z_]\w*\.[A-Za-z_]",
    "indexing": r"[\w)\]]\[",
    "an einops pattern": r"->",
    "arithmetic": r"[\w)\]](\s+(\*\*|//|[-+*/%])\s+|(\*\*|//|[+*/%^]))[\w(\[|]",
    "a bitwise operator": r"~\s*[\w(]",
    "a norm written out": r"\|\|",
    "a library function": r"\b(argsort|argmin|argmax|topk|multinomial|masked_fill|cumprod|cumsum|"
                          r"cross_entropy|softmax|log10|atanh|cdist|einsum|permute|detach|floor|ceil)\b",
}
# the hints of lessons 06-09 as they were: they handed over the formula or the algorithm
OLD_HINTS = {
    "mask_count": "floor(n * mask_ratio((step + 1) / steps, schedule) + 1e-9), then at least steps - 1 - step "
                  "(one token for each later step), at most masked_now - 1 (this step reveals one), and never below 0",
    "interpolant": "t = 0 is data and t = 1 is noise: x_t = (1 - t) data + t noise; the velocity d x_t / dt is "
                   "noise - data. Reshape t (B,) to (B, 1, ..., 1) so it broadcasts over any data shape",
    "remask": "give the known positions (~is_masked) confidence +inf; rank each row's confidences from the lowest "
              "(argsort of argsort); the keep_masked[b] lowest ranks of row b become mask_id, all else keeps its sample",
    "sample_step": "divide the logits by the temperature; set every logit below the k-th largest to -inf "
                   "(logits.topk(k).values[:, -1:]); softmax; torch.multinomial(probs, 1, generator=generator)[:, 0]",
    "next_token_loss": "logits[:, i] predicts sequence[:, i + 1]: drop the last position of the logits and the first "
                       "token of the targets, then one F.cross_entropy over all (B * (N - 1)) positions",
    "euler_step": "x moves by the velocity times the change in time, t_next - t (negative when sampling towards "
                  "the data)",
}



def code_in(hint: str) -> list[str]:
    """What in ``hint`` reads as code, as (kind, text) strings; empty for a hint in words."""
    import re
    return [f"{kind}: {m.group(0)!r}" for kind, pattern in CODE_IN_HINTS.items() for m in re.finditer(pattern, hint)]


@pytest.mark.parametrize("name", sorted(OLD_HINTS))
def test_the_hint_test_catches_the_old_hints_of_06_09(name):
    assert code_in(OLD_HINTS[name]), f"the old {name} hint hands over code, yet passes"


@pytest.mark.parametrize("hint", [
    "the mean (not the sum) of the squared differences, over every element",
    "t = 0 is the data end and t = 1 the noise end; real logits below +1 and fake logits above -1",
    "top-k keeps a row's k largest logits, e.g. for temperature 0.5; shapes (B, 1, ..., 1) and (N, D)",
])
def test_the_hint_test_lets_words_through(hint):
    assert code_in(hint) == []


@pytest.mark.parametrize("name", ALL)
def test_hints_point_at_the_idea_without_the_answer(name):
    """A hint names the quantity, the shape, the edge case; it never states the line or the algorithm in code."""
    from course_lib.notebook.checks import get_exercise
    exercise = get_exercise(name)
    assert exercise.hint and code_in(exercise.hint) == [], (exercise.hint, code_in(exercise.hint))


# what a failure message must name for each exercise of lessons 06-09: the arguments of the failing
# case as the student's function calls them (mask_count's case is a whole decoding: n, steps, schedule)
ARGUMENTS_SHOWN = {
    "hinge_losses": ["logits_real", "logits_fake"], "adaptive_weight": ["rec_loss", "gan_loss", "last_layer"],
    "perceptual_distance": ["features_x", "features_y"], "next_token_loss": ["logits", "sequence"],
    "sample_step": ["logits", "temperature", "top_k"], "cfg_logits": ["cond", "uncond", "scale"],
    "mask_count": ["n", "steps", "schedule"], "remask": ["sampled", "confidence", "is_masked", "keep_masked", "mask_id"],
    "interpolant": ["data", "noise", "t"], "euler_step": ["x", "velocity", "t", "t_next"],
    "cfg_velocity": ["cond", "uncond", "scale"],
    "residual_step": ["residual", "f", "codebook", "side", "phi"], "block_causal_mask": ["scales"],
    "next_scale_inputs": ["quantizer", "grids"],
}
LATE = [e.name for e in exercises() if e.lesson >= "06"]


def test_every_late_exercise_says_which_arguments_it_shows():
    assert sorted(ARGUMENTS_SHOWN) == sorted(LATE)


@pytest.mark.parametrize("name,mistake", [(n, m) for n in LATE for m in WRONG[n]])
def test_failure_messages_name_the_arguments_and_the_output(name, mistake, capsys):
    import re

    from course_lib.notebook.checks import check, get_exercise
    check(name, WRONG[name][mistake])
    message = " ".join(capsys.readouterr().out.split())  # as printed, unwrapped
    where = message.split("hint:")[0]
    missing = [a for a in ARGUMENTS_SHOWN[name] if not re.search(rf"\b{a}\b", where)]
    assert not missing, f"{name} ({mistake}): the message does not name {missing}: {where}"
    outputs = get_exercise(name).outputs
    if isinstance(outputs, str) and "{i}" in outputs:
        assert re.search(re.escape(outputs).replace(r"\{i\}", r"\d+") + ":", where), where
    elif outputs is not None:
        names = [outputs] if isinstance(outputs, str) else list(outputs)
        assert any(f"{n}:" in where for n in names) or "outputs (" in where or "raised" in where, where
    assert "item " not in where, where


def test_the_mask_count_message_reads_as_the_issue_asks(capsys):
    from course_lib.notebook.checks import check
    check("mask_count", WRONG["mask_count"]["ceil instead of floor"])
    message = " ".join(capsys.readouterr().out.split())
    assert re.search(r"case \d+ \(n=\d+, steps=\d+, schedule='\w+'\): masked count after step=\d+: "
                     r"expected \d+, got \d+", message), message


@pytest.mark.parametrize("name", ALL)
def test_cases_are_plain_data_that_the_sandbox_can_load(name, tmp_path):
    """The grader sends the cases to its sandbox through torch.load(weights_only=True): no pickled objects."""
    from course_lib.notebook.checks import get_exercise
    cases = get_exercise(name).make_cases(torch.Generator().manual_seed(3))
    torch.save([{"args": list(c.args), "kwargs": c.kwargs} for c in cases], tmp_path / "cases.pt")
    torch.load(tmp_path / "cases.pt", weights_only=True)
