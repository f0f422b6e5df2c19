"""The four estimator networks of CEST (paper, Appendix B.1).

- `Encoder`: viewpoint (7 outputs) and illumination (9 outputs) networks. Stride-2 3x3 convolutions with
  padding 1, each followed by BatchNorm and ReLU, then global average pooling and a last (1x1) convolution
  without activation. Pooling makes every input size work (the paper's last convolution sees a fixed size).
- `ResidualEncoder`: the shape network; the same stages, each followed by a residual block.
- `ReflectanceUNet`: U-Net whose skip connections are added (not concatenated), from 1/2 to 1/32 of the map
  (none at full size, Table 2), bilinear upsampling and a tanh output; input and output are UV maps of the
  same size (a multiple of 64).

The networks return raw numbers; cest/model.py turns them into viewpoints, coefficients and maps. Weights and
activations are kept channels-last (NHWC): oneDNN's CPU convolutions (forward and backward) and cuDNN's tensor
cores run faster on it; the four networks at the CPU recipe's size train 1.4x faster side by side.
"""

import torch
from torch import nn
import torch.nn.functional as F


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _small_head(in_channels: int, out_channels: int, init_std: float) -> nn.Conv2d:
    """Last 1x1 convolution, initialised near zero so the outputs start at their offsets (see model.py)."""
    head = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.normal_(head.weight, std=init_std)
    nn.init.zeros_(head.bias)
    return head


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions (BN, ReLU between) added to their input, then ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels, 1),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Encoder(nn.Module):
    """Image (B, C, H, W) -> (B, out_features); `residual` adds a residual block after every stage."""

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        widths: tuple[int, ...],
        head_init_std: float,
        residual: bool = False,
    ):
        super().__init__()
        stages = []
        previous = in_channels
        for width in widths:
            stages.append(conv_bn_relu(previous, width, 2))
            if residual:
                stages.append(ResidualBlock(width))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.head = _small_head(previous, out_features, head_init_std)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stages(channels_last(x)).mean((2, 3), keepdim=True)
        return self.head(features).flatten(1)


class ResidualEncoder(Encoder):
    """The shape network: an `Encoder` with a residual block after every stride-2 stage."""

    def __init__(self, in_channels: int, out_features: int, widths: tuple[int, ...], head_init_std: float):
        super().__init__(in_channels, out_features, widths, head_init_std, residual=True)


class ReflectanceUNet(nn.Module):
    """UV map (B, C_in, S, S) -> UV map (B, C_out, S, S) in [-1, 1]; S a multiple of 2 ** (len(widths) + 1).

    Table 2 of the paper: the first convolution already has stride 2, so the encoder's five levels (`widths`)
    sit at 1/2, 1/4, ..., 1/32 of the map, each a pair of convolutions whose output is added to the decoder's
    map of the same size (`skips=True`); a bottom pair at 1/64; six bilinear upsamplings back to full size,
    then a convolution and the tanh output convolution. No encoder map at full resolution reaches the
    decoder: a full-resolution additive skip would make copying the illuminated texture into the
    reflectance (the degenerate solution of Sec. 3.3) one identity away. `skips=False` gives the same layers
    as a plain encoder-decoder (additive skips have no parameters): IEST's image-to-UV network, whose input is
    not aligned with its output.
    """

    def __init__(self, in_channels: int, out_channels: int, widths: tuple[int, ...], skips: bool = True):
        super().__init__()
        self.levels = len(widths)
        self.skips = skips
        inputs = (in_channels, *widths[:-1])
        self.down = nn.ModuleList(
            nn.Sequential(conv_bn_relu(inputs[i], widths[i], 2), conv_bn_relu(widths[i], widths[i], 1))
            for i in range(len(widths))
        )
        self.bottom = nn.Sequential(conv_bn_relu(widths[-1], widths[-1], 2), conv_bn_relu(widths[-1], widths[-1], 1))
        # Decoder level i (at the size of encoder level i): upsample, conv to widths[i], add the skip, conv.
        below = list(widths[1:]) + [widths[-1]]
        self.up_in = nn.ModuleList(conv_bn_relu(below[i], widths[i], 1) for i in range(len(widths)))
        self.up_out = nn.ModuleList(conv_bn_relu(widths[i], widths[i], 1) for i in range(len(widths)))
        self.full = conv_bn_relu(widths[0], widths[0], 1)
        self.out = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (self.levels + 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"UV map size must be a multiple of {factor}, got {tuple(x.shape[-2:])}")
        x = channels_last(x)
        encoded = []
        for down in self.down:
            encoded.append(down(encoded[-1] if encoded else x))
        y = self.bottom(encoded[-1])
        for level in reversed(range(self.levels)):
            y = self.up_in[level](F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False))
            if self.skips:
                y = y + encoded[level]
            y = self.up_out[level](y)
        y = self.full(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False))
        return torch.tanh(self.out(y)).contiguous()  # the renderer samples it: its kernels want NCHW
