"""Encoders, decoders and the projection head, by architecture name (ARCHITECTURES: a pair of constructors).

"mlp" is the official SimVAE network for 28x28 grey images: encoder 784 -> 2000 -> 500 -> 500 -> out, decoder
D -> 500 -> 500 -> 2000 -> 784, ReLU between layers (any image shape works: it is flattened). "resnet" is the
official convolutional pair for 32x32 and 64x64 RGB images (simvae_fast.app.resnet). Decoders give the
likelihood's parameter before its link: logits (Bernoulli) or the pre-sigmoid mean (Gaussian).
"""
import math

from torch import nn

from simvae_fast.app.resnet import ResNetDecoder, ResNetEncoder

ENCODER_HIDDEN = (2000, 500, 500)
DECODER_HIDDEN = (500, 500, 2000)
PROJECTION_HIDDEN = 500
PROJECTION_DIM = 64


def mlp(sizes):
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """[B, C, H, W] -> [B, out_features]."""

    def __init__(self, image_shape, out_features, hidden=ENCODER_HIDDEN):
        super().__init__()
        self.net = mlp((math.prod(image_shape), *hidden, out_features))

    def forward(self, x):
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """[B, D] -> logits [B, C, H, W]."""

    def __init__(self, latent_dim, image_shape, hidden=DECODER_HIDDEN):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = mlp((latent_dim, *hidden, math.prod(image_shape)))

    def forward(self, z):
        return self.net(z).view(-1, *self.image_shape)


ARCHITECTURES = {"mlp": (MLPEncoder, MLPDecoder), "resnet": (ResNetEncoder, ResNetDecoder)}


def _architecture(name):
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture: expected one of {', '.join(map(repr, ARCHITECTURES))}, got {name!r}")
    return ARCHITECTURES[name]


def build_encoder(name, image_shape, out_features):
    return _architecture(name)[0](image_shape, out_features)


def build_decoder(name, latent_dim, image_shape):
    return _architecture(name)[1](latent_dim, image_shape)


def projection_head(in_features, hidden=PROJECTION_HIDDEN, out_features=PROJECTION_DIM):
    """SimCLR's projection head g: Linear -> ReLU -> Linear."""
    return mlp((in_features, hidden, out_features))
