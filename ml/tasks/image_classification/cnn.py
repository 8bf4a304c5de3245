"""The image classifier's torch module: a small VGG-style CNN sized by params.

Imported only where torch is wanted (training workers, the predictor), never by `ml --help`.

The module takes raw pixel values (0-255, any numeric dtype) and normalises them itself, and
its augmentation is a layer that acts only in training mode (as Keras' RandomFlip does), so the
trainer, the predictor and an ONNX export all feed the same thing and cannot disagree on the
preprocessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild the module; meta.json keeps it beside the weights."""

    height: int
    width: int
    num_classes: int
    conv_channels: tuple[int, ...]
    hidden: int
    convs_per_block: int = 1
    dropout: float = 0.0
    augment: bool = False
    max_shift: int = 2
    # Pixel statistics of the training images scaled to 0-1 (Fashion-MNIST's by default).
    mean: float = 0.2860
    std: float = 0.3530

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["conv_channels"] = list(self.conv_channels)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Architecture:
        fields = dict(values)
        fields["conv_channels"] = tuple(int(c) for c in fields["conv_channels"])
        return cls(**fields)

    @property
    def feature_size(self) -> int:
        return self.hidden

    def final_side(self) -> tuple[int, int]:
        """Height and width after the conv blocks (each halves both, rounding down)."""
        blocks = len(self.conv_channels)
        return self.height >> blocks, self.width >> blocks


class CNNOutput(NamedTuple):
    """logits: N x classes; features: N x hidden, the penultimate activations (drift)."""

    logits: torch.Tensor
    features: torch.Tensor


class ShiftFlip(nn.Module):
    """Training-time augmentation on raw pixels: a random horizontal flip and a random shift of
    up to `max_shift` pixels each way, the uncovered border filled with background (0).

    Uses torch's global RNG, so `torch.manual_seed` makes it repeatable; identity in eval mode.
    """

    def __init__(self, max_shift: int) -> None:
        super().__init__()
        self.max_shift = max_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.max_shift <= 0:
            return x
        n, _, h, w = x.shape
        s = self.max_shift
        flip = torch.rand(n, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        padded = nn.functional.pad(x, (s, s, s, s))
        dy = torch.randint(0, 2 * s + 1, (n, 1, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * s + 1, (n, 1, 1, 1), device=x.device)
        rows = dy + torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = dx + torch.arange(w, device=x.device).view(1, 1, 1, w)
        padded = torch.gather(padded, 2, rows.expand(n, 1, h, w + 2 * s))
        return torch.gather(padded, 3, cols.expand(n, 1, h, w))


class ImageCNN(nn.Module):
    """[conv3x3 -> batch norm -> ReLU] x convs_per_block -> max-pool, per conv_channels entry;
    then dropout -> dense `hidden` -> batch norm -> ReLU (the features) -> dropout -> classes."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        side_h, side_w = arch.final_side()
        if side_h < 1 or side_w < 1:
            raise ValueError(
                f"{len(arch.conv_channels)} conv blocks halve a {arch.height}x{arch.width} image "
                "to nothing; use fewer image.conv_channels entries"
            )
        self.register_buffer("mean", torch.tensor(255.0 * arch.mean))
        self.register_buffer("std", torch.tensor(255.0 * arch.std))
        self.augment = ShiftFlip(arch.max_shift if arch.augment else 0)
        layers: list[nn.Module] = []
        channels = 1
        for width in arch.conv_channels:
            for _ in range(arch.convs_per_block):
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
            layers.append(nn.MaxPool2d(2))
        # NHWC conv weights make oneDNN run every conv block in NHWC (a 1-channel input is
        # both layouts at once, so the weights decide), without reordering the activations at
        # each layer: less CPU time per image (reports/benchmarks/image_training.md). Only the
        # layout differs: the values, the saved files and the flattened features are the same.
        self.conv = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.embed = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(arch.dropout),
            nn.Linear(channels * side_h * side_w, arch.hidden, bias=False),
            nn.BatchNorm1d(arch.hidden),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(arch.dropout), nn.Linear(arch.hidden, arch.num_classes)
        )

    def forward(self, pixels: torch.Tensor, **_: Any) -> CNNOutput:
        """pixels: N x H x W or N x 1 x H x W raw values 0-255."""
        features = self.features(pixels)
        return CNNOutput(logits=self.classifier(features), features=features)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.float()
        if x.dim() == 3:
            x = x.unsqueeze(1)
        x = (self.augment(x) - self.mean) / self.std
        return self.embed(self.conv(x))
