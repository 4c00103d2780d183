"""The official code's convolutional networks for 32x32 (CIFAR-10) and 64x64 (CelebA) RGB images.

Encoder: torchvision's ResNet18 layout with BasicBlocks, widths 32, 64, 128 (three stages of two blocks; the
official code builds a four-stage ResNet18 and drops its last stage and fc), the stem conv replaced by a 3x3
stride-1 conv to 64 channels without padding (32 px; with bias) or a 4x4 stride-1 one without bias (64 px), then
BN, ReLU, MaxPool(3, 2, 1); every stage's first block has a 1x1 conv + BN shortcut (stride 1, 2, 2); then flatten
and Linear to `out_features` (2·D). Spatial sizes: 32 -> 30 -> 15 -> 15 -> 8 -> 4, 128·4·4 = 2048 features;
64 -> 61 -> 31 -> 31 -> 16 -> 8, 128·8·8 = 8192.

Decoder: Linear(D -> 512·k), k = 4 (32 px) or 16 (64 px), viewed as 512x2x2 or 512x4x4; four stages of two
transposed-conv blocks, 512 -> 256 -> 128 -> 64 -> 64: a block is ConvT3x3(stride s) -> BN -> ReLU -> ConvT3x3 ->
BN (+ a 1x1 ConvT(stride 2) + BN shortcut in the upsampling block, the last of each of the first three stages;
the other blocks have no shortcut), then ReLU; the first block of a stage keeps its input width. Last,
ConvTranspose2d(64 -> C, kernel 7, stride 2, padding 3, output_padding 1). A stride-2 transposed 3x3 conv with
padding 1 and output_padding 1 doubles the size ((H - 1)·2 - 2 + 3 + 1 = 2H), so 2 -> 4 -> 8 -> 16 -> 16 -> 32
and 4 -> 8 -> 16 -> 32 -> 32 -> 64: the official layout gives 32x32 and 64x64 exactly (tests/test_models.py).
The decoder's output is the mean before the sigmoid (Gaussian likelihood: methods apply it) or the logits.

FLOPs (2 per multiply-add, forward, torch.utils.flop_counter) per image: 32 px, encoder 0.059 G, decoder 0.282 G;
64 px, 0.252 G and 1.128 G. A training step is about 3x the forward (benchmarks/conv_step.py counts it).
Initialisation as the official code: Kaiming-normal (fan_out) convs of the encoder stages, BN weight 1 and bias 0;
the replaced stem and the transposed convs keep torch's defaults.
"""
from torch import nn

ENCODER_WIDTHS = (32, 64, 128)
DECODER_WIDTHS = (256, 128, 64, 64)  # after the 512-channel start
STEMS = {32: dict(kernel_size=3, bias=True), 64: dict(kernel_size=4, bias=False)}
FEATURE_SIDE = {32: 4, 64: 8}  # the encoder's last feature map: 128 x 4 x 4 or 128 x 8 x 8


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, + shortcut, ReLU."""

    def __init__(self, inputs, width, stride=1, shortcut=False):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential(nn.Conv2d(inputs, width, 1, stride, bias=False),
                                      nn.BatchNorm2d(width)) if shortcut else None

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class UpBlock(nn.Module):
    """The official decoder block: convT3x3(stride) -> BN -> ReLU -> convT3x3 -> BN, (+ 1x1 convT + BN shortcut
    when upsampling), ReLU."""

    def __init__(self, inputs, width, stride=1):
        super().__init__()
        extra = stride - 1  # output_padding: stride 2 doubles the size
        self.conv1 = nn.ConvTranspose2d(inputs, width, 3, stride, 1, output_padding=extra, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.ConvTranspose2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential(nn.ConvTranspose2d(inputs, width, 1, stride, output_padding=extra, bias=False),
                                      nn.BatchNorm2d(width)) if stride > 1 else None

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out if self.shortcut is None else out + self.shortcut(x))


def _check_shape(image_shape):
    channels, height, width = image_shape
    if height != width or height not in STEMS:
        raise ValueError(f"architecture 'resnet': expected square images of {' or '.join(map(str, STEMS))} pixels, "
                         f"got {height}x{width} (use --architecture mlp)")
    return channels, height


class ResNetEncoder(nn.Module):
    """[B, C, 32 | 64, same] -> [B, out_features]."""

    def __init__(self, image_shape, out_features):
        super().__init__()
        channels, size = _check_shape(image_shape)
        layers, inputs = [], 64
        for stage, width in enumerate(ENCODER_WIDTHS):
            layers += [BasicBlock(inputs, width, 1 if stage == 0 else 2, shortcut=True), BasicBlock(width, width)]
            inputs = width
        for m in nn.Sequential(*layers).modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        stem = nn.Conv2d(channels, 64, stride=1, **STEMS[size])
        self.net = nn.Sequential(stem, nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1), *layers,
                                 nn.Flatten())
        self.head = nn.Linear(ENCODER_WIDTHS[-1] * FEATURE_SIDE[size] ** 2, out_features)

    def forward(self, x):
        return self.head(self.net(x))


class ResNetDecoder(nn.Module):
    """[B, D] -> [B, C, 32 | 64, same]."""

    def __init__(self, latent_dim, image_shape):
        super().__init__()
        channels, size = _check_shape(image_shape)
        self.start = size // 16  # 2 or 4
        self.linear = nn.Linear(latent_dim, 512 * self.start ** 2)
        layers, inputs = [], 512
        for stage, width in enumerate(DECODER_WIDTHS):
            upsample = stage < len(DECODER_WIDTHS) - 1
            layers += [UpBlock(inputs, inputs), UpBlock(inputs, width, 2 if upsample else 1)]
            inputs = width
        self.net = nn.Sequential(*layers, nn.ConvTranspose2d(64, channels, 7, 2, 3, output_padding=1))

    def forward(self, z):
        return self.net(self.linear(z).view(-1, 512, self.start, self.start))
