"""Conv blocks: ResBlock, Encoder, Decoder (the VQ-VAE paper's CIFAR-10 network)."""
import pytest
import torch
from torch import nn

from dvl_helpers.nn import Decoder, Encoder, ResBlock, check_shape


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _convs(module, kind=nn.Conv2d):
    return [m for m in module.modules() if type(m) is kind]


@pytest.mark.parametrize("downsample", [4, 8])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_encoder_decoder_shapes(downsample, in_channels):
    enc = Encoder(in_channels, hidden=16, res_hidden=4, num_res_blocks=1, downsample=downsample)
    dec = Decoder(16, in_channels, hidden=16, res_hidden=4, num_res_blocks=1, upsample=downsample)
    x = torch.rand(2, in_channels, 32, 24)
    z = enc(x)
    assert z.shape == (2, 16, 32 // downsample, 24 // downsample)
    assert enc.out_channels == 16
    assert dec(z).shape == x.shape


@pytest.mark.parametrize("downsample", [4, 8])
def test_out_channels_maps_to_code_dim(downsample):
    enc = Encoder(3, hidden=16, res_hidden=4, downsample=downsample, out_channels=5)
    dec = Decoder(5, 3, hidden=16, res_hidden=4, upsample=downsample)
    z = enc(torch.rand(3, 3, 16, 16))
    assert z.shape == (3, 5, 16 // downsample, 16 // downsample)
    assert enc.out_channels == 5
    assert dec(z).shape == (3, 3, 16, 16)
    # the projection to D is a 1x1 conv at the very end
    last = enc.net[-1]
    assert isinstance(last, nn.Conv2d) and last.kernel_size == (1, 1) and last.out_channels == 5


def test_default_encoder_is_the_vqvae_cifar10_network():
    enc = Encoder()
    convs = _convs(enc)
    strided = [c for c in convs if c.stride == (2, 2)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in strided] == [
        (3, 64, (4, 4)), (64, 128, (4, 4))]
    assert all(c.padding == (1, 1) for c in strided)
    # the 3x3 conv after the strided ones, then two residual blocks of 128 -> 32 -> 128
    assert (convs[2].in_channels, convs[2].out_channels, convs[2].kernel_size, convs[2].stride) == (
        128, 128, (3, 3), (1, 1))
    blocks = [m for m in enc.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 2
    for block in blocks:
        c3, c1 = _convs(block)
        assert (c3.in_channels, c3.out_channels, c3.kernel_size) == (128, 32, (3, 3))
        assert (c1.in_channels, c1.out_channels, c1.kernel_size) == (32, 128, (1, 1))
    assert len(convs) == 3 + 2 * 2  # nothing else
    # the residual stack ends in a ReLU (as in the Sonnet example)
    assert isinstance(enc.net[-1], nn.ReLU)
    assert enc(torch.rand(1, 3, 32, 32)).shape == (1, 128, 8, 8)


def test_default_decoder_mirrors_the_encoder():
    dec = Decoder(in_channels=64)
    convs = _convs(dec)
    assert len(convs) == 1 + 2 * 2
    assert (convs[0].in_channels, convs[0].out_channels, convs[0].kernel_size) == (64, 128, (3, 3))
    assert len([m for m in dec.modules() if isinstance(m, ResBlock)]) == 2
    ups = _convs(dec, nn.ConvTranspose2d)
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in ups] == [
        (128, 64, (4, 4), (2, 2)), (64, 3, (4, 4), (2, 2))]
    # unbounded output: the last layer is the transposed conv itself (no activation)
    assert dec.last_layer is ups[-1] and dec.net[-1] is ups[-1]
    assert dec(torch.rand(1, 64, 8, 8)).shape == (1, 3, 32, 32)


def test_downsample_8_has_three_strided_convs():
    enc = Encoder(1, hidden=32, res_hidden=8, downsample=8)
    assert len([c for c in _convs(enc) if c.stride == (2, 2)]) == 3
    dec = Decoder(32, 1, hidden=32, res_hidden=8, upsample=8)
    assert len(_convs(dec, nn.ConvTranspose2d)) == 3


def test_resblock_shape_and_residual():
    block = ResBlock(8, 3)
    x = torch.randn(2, 8, 5, 7)
    y = block(x)
    assert y.shape == x.shape
    assert not torch.allclose(y, x)
    last = block.block[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_resblock_relu_comes_first():
    # relu(x) = 0 for negative inputs, so the residual branch is the same constant for all of them
    block = ResBlock(4, 2)
    a, b = -torch.rand(2, 1, 4, 3, 3) - 0.1
    torch.testing.assert_close(block(a) - block(b), a - b)


@pytest.mark.parametrize("bad", [1, 0, -4, 3, 6, 12])
def test_bad_downsample_raises(bad):
    with pytest.raises(ValueError, match=f"power of two.*got {bad}"):
        Encoder(downsample=bad)
    with pytest.raises(ValueError, match=f"power of two.*got {bad}"):
        Decoder(upsample=bad)


def test_encoder_wrong_channels_names_expected_and_received():
    enc = Encoder(1, hidden=8, res_hidden=4, num_res_blocks=1)
    with pytest.raises(ValueError) as err:
        enc(torch.rand(2, 3, 16, 16))
    msg = str(err.value)
    assert "[B, 1, H, W]" in msg and "(2, 3, 16, 16)" in msg


def test_encoder_wrong_ndim_names_expected_and_received():
    enc = Encoder(3, hidden=8, res_hidden=4, num_res_blocks=1)
    with pytest.raises(ValueError) as err:
        enc(torch.rand(3, 16, 16))
    msg = str(err.value)
    assert "[B, 3, H, W]" in msg and "(3, 16, 16)" in msg


def test_encoder_size_not_multiple_of_downsample():
    enc = Encoder(3, hidden=8, res_hidden=4, num_res_blocks=1, downsample=8)
    with pytest.raises(ValueError) as err:
        enc(torch.rand(1, 3, 16, 20))
    assert "multiples of 8" in str(err.value) and "(16, 20)" in str(err.value)


def test_decoder_wrong_shape_names_expected_and_received():
    dec = Decoder(16, 3, hidden=8, res_hidden=4, num_res_blocks=1)
    with pytest.raises(ValueError) as err:
        dec(torch.rand(2, 8, 4, 4))
    assert "[B, 16, h, w]" in str(err.value) and "(2, 8, 4, 4)" in str(err.value)
    with pytest.raises(ValueError, match=r"\(16, 4, 4\)"):
        dec(torch.rand(16, 4, 4))


def test_non_tensor_input_is_a_type_error():
    with pytest.raises(TypeError, match="torch.Tensor.*list"):
        Decoder(2, 1, hidden=8, res_hidden=4)([[1.0]])


def test_check_shape_messages():
    check_shape(torch.zeros(2, 3, 4, 4), "x", 4, 3)
    with pytest.raises(ValueError, match=r"x must be 4-D with 3 channels at dim 1, got shape \(2, 1, 4, 4\)"):
        check_shape(torch.zeros(2, 1, 4, 4), "x", 4, 3)


def test_gradients_reach_every_parameter():
    enc = Encoder(3, hidden=16, res_hidden=4, num_res_blocks=2, out_channels=4)
    dec = Decoder(4, 3, hidden=16, res_hidden=4, num_res_blocks=2)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    dec(enc(x)).pow(2).mean().backward()
    for name, p in [*enc.named_parameters(), *dec.named_parameters()]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0
