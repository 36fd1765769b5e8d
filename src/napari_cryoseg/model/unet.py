"""A configurable 2D U-Net (Ronneberger et al. 2015) built from :class:`UNetConfig`.

Module names mirror the widely used public ``U_Net`` layout (``conv_block`` with a
``conv`` Sequential, ``up_conv`` with an ``up`` Sequential) so its state_dicts map
onto ours by renaming keys only (see :mod:`napari_cryoseg.model.import_weights`).
"""

from __future__ import annotations

import torch
from torch import nn

from napari_cryoseg.model.config import UNetConfig


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by optional BatchNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for channels_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(channels_in, out_channels, 3, padding=1, bias=True))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H, W)
        return self.conv(x)


class UpBlock(nn.Module):
    """2x up-sampling that also halves the channels."""

    def __init__(self, in_channels: int, out_channels: int, mode: str, batch_norm: bool) -> None:
        super().__init__()
        if mode == "transpose":
            self.up = nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2))
        else:
            align = {"align_corners": False} if mode == "bilinear" else {}
            layers: list[nn.Module] = [
                nn.Upsample(scale_factor=2, mode=mode, **align),
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True),
            ]
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            self.up = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C/2, 2H, 2W)
        return self.up(x)


class UNet(nn.Module):
    """U-Net returning logits of shape (B, ``config.out_channels``, H, W).

    H and W must be multiples of ``config.stride``.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
        self.pool = nn.MaxPool2d(2, 2)
        self.encoders = nn.ModuleList()
        channels = config.in_channels
        for width in widths:
            self.encoders.append(ConvBlock(channels, width, config.batch_norm))
            channels = width
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):  # deepest first
            self.ups.append(UpBlock(width * 2, width, config.upsampling, config.batch_norm))
            decoder_in = width * 2 if config.skip_connections else width
            self.decoders.append(ConvBlock(decoder_in, width, config.batch_norm))
        self.head = nn.Conv2d(widths[0], config.out_channels, 1)
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # He init suits ReLU networks; BN starts as identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
        stride = self.config.stride
        if x.shape[-1] % stride or x.shape[-2] % stride:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} must be a multiple of {stride} in H and W "
                f"(depth {self.config.depth}); pad or choose another tile size"
            )
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        x = self.dropout(skips.pop())  # bottleneck
        for up, decoder in zip(self.ups, self.decoders):
            x = up(x)
            if self.config.skip_connections:
                x = torch.cat((skips.pop(), x), dim=1)  # skip first, as the public U_Net
            x = self.dropout(decoder(x))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
