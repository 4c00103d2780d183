"""The official convolutional networks: output shapes at 32 and 64 px (the official layout gives them exactly),
the layer widths of the spec, bad image sizes refused, and a SimVAE step on RGB views with the Gaussian
likelihood on sigmoid outputs."""
import pytest
import torch
from torch import nn

from simvae_fast.app import methods, models, resnet


@pytest.mark.parametrize("size, features", [(32, 128 * 4 * 4), (64, 128 * 8 * 8)])
def test_shapes_and_widths(size, features):
    encoder = models.build_encoder("resnet", (3, size, size), 2 * 64)
    decoder = models.build_decoder("resnet", 64, (3, size, size))
    x = torch.rand(3, 3, size, size)
    assert encoder(x).shape == (3, 128)
    assert decoder(torch.randn(3, 64)).shape == (3, 3, size, size)
    assert encoder.head.in_features == features
    stem = encoder.net[0]
    assert (stem.kernel_size, stem.stride, stem.padding, stem.bias is not None) == \
        (((3, 3), (1, 1), (0, 0), True) if size == 32 else ((4, 4), (1, 1), (0, 0), False))
    blocks = [m for m in encoder.modules() if isinstance(m, resnet.BasicBlock)]
    assert [b.conv2.out_channels for b in blocks] == [32, 32, 64, 64, 128, 128]
    assert [b.shortcut is not None for b in blocks] == [True, False] * 3
    assert decoder.linear.out_features == 512 * (size // 16) ** 2
    ups = [m for m in decoder.modules() if isinstance(m, resnet.UpBlock)]
    assert [b.conv2.out_channels for b in ups] == [512, 256, 256, 128, 128, 64, 64, 64]
    assert [b.shortcut is not None for b in ups] == [False, True] * 3 + [False, False]
    last = decoder.net[-1]
    assert isinstance(last, nn.ConvTranspose2d) and (last.kernel_size, last.stride, last.padding,
                                                     last.output_padding) == ((7, 7), (2, 2), (3, 3), (1, 1))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 48, 48), (3, 32, 64)])
def test_other_image_sizes_are_refused(shape):
    with pytest.raises(ValueError, match="architecture 'resnet': expected square images of 32 or 64 pixels"):
        models.build_encoder("resnet", shape, 8)


def test_simvae_step_on_rgb_views():
    model = methods.build_method("simvae", image_shape=(3, 32, 32), latent_dim=8, architecture="resnet",
                                 likelihood="gaussian", backend="reference")
    views = torch.rand(4, 2, 3, 32, 32)
    loss, parts = model(views, seed=1)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p) for p in parts.values())
    assert all(p.grad is not None for p in model.parameters())
    recon = model.reconstruct(views[:, 0])
    assert recon.shape == (4, 3, 32, 32) and 0 <= recon.min() and recon.max() <= 1  # the sigmoid mean
