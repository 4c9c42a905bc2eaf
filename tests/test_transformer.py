"""dvl_helpers.transformer: blocks, the trunk and the two code priors."""
import pytest
import torch

from dvl_helpers.transformer import Block, CodePrior, MaskedCodePrior, Transformer


def test_block_keeps_the_shape_and_a_causal_block_ignores_the_future():
    torch.manual_seed(0)
    block = Block(16, heads=4, causal=True).eval()
    x = torch.randn(2, 6, 16)
    y = block(x)
    assert y.shape == (2, 6, 16)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 2, 16)
    assert torch.allclose(block(x2)[:, :4], y[:, :4], atol=1e-6)
    assert not torch.allclose(block(x2)[:, 4:], y[:, 4:])


def test_bidirectional_block_sees_the_future_and_an_explicit_mask_replaces_causal():
    torch.manual_seed(0)
    block = Block(16, heads=2).eval()
    x = torch.randn(1, 5, 16)
    x2 = x.clone()
    x2[:, -1] = torch.randn(1, 16)
    assert not torch.allclose(block(x)[:, 0], block(x2)[:, 0])
    tril = torch.ones(5, 5, dtype=torch.bool).tril()
    causal = Block(16, heads=2, causal=True).eval()
    causal.load_state_dict(block.state_dict())
    assert torch.allclose(block(x, mask=tril), causal(x), atol=1e-6)
    per_row = tril.expand(3, 5, 5)
    assert torch.allclose(block(x.expand(3, 5, 16), mask=per_row)[0], causal(x)[0], atol=1e-6)


def test_block_rejects_bad_inputs():
    block = Block(8, heads=2)
    with pytest.raises(ValueError, match=r"\[B, T, dim=8\]"):
        block(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="torch.bool"):
        block(torch.randn(2, 3, 8), mask=torch.ones(3, 3))
    with pytest.raises(ValueError, match="divisible"):
        Block(10, heads=3)


def test_transformer_trunk_is_plain_blocks_and_a_layer_norm():
    trunk = Transformer(dim=16, depth=3, heads=4)
    assert len(trunk.blocks) == 3 and all(not b.causal for b in trunk.blocks)
    assert trunk(torch.randn(2, 7, 16)).shape == (2, 7, 16)


def test_code_prior_predicts_code_i_from_the_codes_before_it():
    torch.manual_seed(0)
    model = CodePrior(num_codes=10, length=6, dim=16, depth=2, heads=2).eval()
    codes = torch.randint(0, 10, (3, 6))
    logits = model(codes)
    assert logits.shape == (3, 6, 10)
    changed = codes.clone()
    changed[:, 3] = (codes[:, 3] + 1) % 10
    out = model(changed)
    assert torch.allclose(out[:, :4], logits[:, :4], atol=1e-6)     # position 3 never sees code 3
    assert not torch.allclose(out[:, 4], logits[:, 4])
    assert torch.allclose(model(codes[:, :1])[:, 0], logits[:, 0], atol=1e-6)   # BOS only
    assert model.bos_id == 10


def test_masked_prior_is_bidirectional_and_accepts_the_mask_token():
    torch.manual_seed(0)
    model = MaskedCodePrior(num_codes=10, length=6, dim=16, depth=2, heads=2).eval()
    assert model.mask_id == 10
    tokens = torch.full((2, 6), model.mask_id)
    tokens[:, 5] = 3
    logits = model(tokens)
    assert logits.shape == (2, 6, 10)
    other = tokens.clone()
    other[:, 5] = 4
    assert not torch.allclose(model(other)[:, 0], logits[:, 0])


def test_code_models_reject_bad_codes():
    model = CodePrior(num_codes=4, length=3, dim=8, depth=1, heads=2)
    with pytest.raises(ValueError, match="torch.long"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        model(torch.full((2, 3), 4))
    with pytest.raises(ValueError, match="at most length=3"):
        model(torch.zeros(2, 4, dtype=torch.long))
    masked = MaskedCodePrior(num_codes=4, length=3, dim=8, depth=1, heads=2)
    masked(torch.full((1, 3), 4))
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        masked(torch.full((1, 3), 5))
