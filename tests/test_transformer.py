"""The transformer core: shapes, masks, positions, adaLN-Zero, the KV cache, and loud errors."""
import pytest
import torch

from course_lib.generators.transformer import (Transformer, TransformerConfig, apply_rotary, rotary_tables,
                                               transformer_presets)

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed=0, **kwargs) -> Transformer:
    torch.manual_seed(seed)
    defaults = dict(width=32, depth=2, heads=4, max_len=12)
    return Transformer(TransformerConfig(**{**defaults, **kwargs})).eval()


def _inputs(b=2, n=10, d=32, seed=1) -> torch.Tensor:
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(transformer_presets))
def test_presets_keep_the_shape(name):
    config = transformer_presets[name]
    x = torch.randn(2, 5, config.width)
    assert Transformer(config)(x).shape == (2, 5, config.width)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_causal_mask_hides_the_future_and_full_mask_does_not(positions):
    x = _inputs()
    changed = x.clone()
    changed[:, 6] = torch.randn(2, 32)  # change token 6 only
    with torch.no_grad():
        causal = _model(positions=positions)
        before, after = causal(x), causal(changed)
        assert torch.allclose(before[:, :6], after[:, :6], atol=1e-6)  # the past cannot see token 6
        assert not torch.allclose(before[:, 6:], after[:, 6:], atol=1e-3)  # token 6 and later do
        full = _model(positions=positions, mask="full")
        assert not torch.allclose(full(x)[:, :6], full(changed)[:, :6], atol=1e-3)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_positions_break_permutation_symmetry_and_none_keeps_it(positions):
    x = _inputs()
    order = torch.randperm(10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = _model(positions="none", mask="full")
        assert torch.allclose(plain(x)[:, order], plain(x[:, order]), atol=1e-5)  # a set model
        placed = _model(positions=positions, mask="full")
        for block in placed.blocks:  # sharper attention than at init, so that positions show
            block.attn.qkv.weight.mul_(10)
        assert not torch.allclose(placed(x)[:, order], placed(x[:, order]), atol=1e-3)


def test_rotary_scores_depend_only_on_the_offset():
    cos, sin = rotary_tables(20, 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m, n):  # the attention score of a query at position m and a key at position n
        return (apply_rotary(q, cos[m:m + 1], sin[m:m + 1]) * apply_rotary(k, cos[n:n + 1], sin[n:n + 1])).sum()

    assert torch.allclose(score(3, 1), score(15, 13), atol=1e-5)  # same offset, same score
    assert not torch.allclose(score(3, 1), score(3, 2), atol=1e-3)  # another offset, another score
    rotated = apply_rotary(q.expand(1, 1, 20, 8), cos, sin)
    assert torch.allclose(rotated.norm(dim=-1), q.norm().expand(1, 1, 20), atol=1e-5)  # a rotation
    assert torch.equal(apply_rotary(q, cos[:1], sin[:1]), q)  # position 0 is not rotated


def test_adaln_zero_blocks_start_as_the_identity():
    model = _model(cond_dim=6, positions="none", mask="full")
    x, cond = _inputs(), torch.randn(2, 6)
    with torch.no_grad():
        for block in model.blocks:
            assert torch.equal(block(x, cond), x)
        expected = torch.nn.functional.layer_norm(x, (32,))
        assert torch.allclose(model(x, cond), expected, atol=1e-6)
        torch.nn.init.normal_(model.blocks[0].modulation.weight, std=0.1)  # once trained, the condition acts
        other = torch.randn(2, 6)
        assert not torch.allclose(model.blocks[0](x, cond), x, atol=1e-3)
        assert not torch.allclose(model.blocks[0](x, cond), model.blocks[0](x, other), atol=1e-3)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("chunks", [[1] * 10, [3, 1, 4, 2]])
def test_kv_cache_matches_the_full_pass(positions, chunks):
    model, x = _model(positions=positions), _inputs()
    with torch.no_grad():
        full = model(x)
        cache, outputs, start = model.new_cache(), [], 0
        for size in chunks:  # token by token, and chunks after a cached prefix
            outputs.append(model(x[:, start:start + size], cache=cache))
            start += size
    assert cache.length == 10
    assert torch.allclose(torch.cat(outputs, dim=1), full, atol=1e-5)


def test_kv_cache_refuses_what_it_cannot_hold():
    model, x = _model(), _inputs(n=8)
    cache = model.new_cache()
    model(x, cache=cache)
    with pytest.raises(ValueError, match="max_len=12"):
        model(x, cache=cache)  # 8 + 8 positions > 12
    with pytest.raises(ValueError, match="batch 2"):
        cache.update(0, torch.zeros(3, 4, 1, 8), torch.zeros(3, 4, 1, 8))
    with pytest.raises(ValueError, match="causal"):
        _model(mask="full").new_cache()


@pytest.mark.parametrize("kwargs, message", [
    (dict(mask="diagonal"), "unknown mask"),
    (dict(positions="sinusoidal"), "unknown positions"),
    (dict(width=30, heads=4), "divisible by heads"),
    (dict(width=12, heads=4, positions="rotary"), "even head size"),
    (dict(depth=0), "depth must be a positive int"),
])
def test_bad_configs_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**kwargs)


def test_bad_inputs_raise():
    model = _model()
    with pytest.raises(ValueError, match=r"\(B, N, 32\)"):
        model(torch.zeros(2, 5, 16))
    with pytest.raises(ValueError, match="max_len=12"):
        model(torch.zeros(1, 13, 32))
    with pytest.raises(ValueError, match="cond"):
        model(torch.zeros(1, 5, 32), cond=torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"cond of shape \(B, 6\)"):
        _model(cond_dim=6)(torch.zeros(1, 5, 32))
