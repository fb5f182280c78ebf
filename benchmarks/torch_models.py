"""The benchmark's models in PyTorch (NCHW), layer for layer as cnn_jax builds them.

Same layers, padding, strides, batch norm (eps 1e-5; torch momentum 0.1 = flax momentum 0.9),
dropout rates and parameter counts as `cnn_jax.models`; the same initialization schemes:
flax's default `lecun_normal` (truncated normal, fan-in, std corrected for the truncation at 2 std)
for convs and dense layers, zero biases, and He normal with fan-out for the ResNets' convs.
ResNet-50 is written here too (torchvision's layout, "v1.5"), so that torchvision is not needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TRUNCATED_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2], as jax's initializers use


def lecun_normal_(weight: torch.Tensor) -> None:
    """flax's default kernel init: truncated normal, variance 1 / fan_in (fan_in = in x kh x kw)."""
    std = math.sqrt(1.0 / weight[0].numel()) / TRUNCATED_STD
    nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std)


def init_weights(model: nn.Module, conv_init=lecun_normal_) -> nn.Module:
    """`conv_init` for every conv, lecun normal for every dense layer, zero biases, BN scale 1 and shift 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            (conv_init if isinstance(module, nn.Conv2d) else lecun_normal_)(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def he_normal_fan_out_(weight: torch.Tensor) -> None:
    """cnn_jax's ResNet conv init (torchvision's): normal, variance 2 / fan_out (fan_out = out x kh x kw)."""
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


def conv_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding), nn.ReLU(inplace=True)]


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def seed_cnn(in_channels: int, num_classes: int) -> nn.Module:
    """Conv64 > MaxPool2 > Conv128 > MaxPool2 > Conv256 (3x3, VALID, ReLU) > GAP > Dense."""
    return init_weights(
        nn.Sequential(
            *conv_relu(in_channels, 64, 3),
            nn.MaxPool2d(2),
            *conv_relu(64, 128, 3),
            nn.MaxPool2d(2),
            *conv_relu(128, 256, 3),
            GlobalAvgPool(),
            nn.Linear(256, num_classes),
        )
    )


class BasicBlock(nn.Module):
    """ResNet v1 basic block with an option A shortcut (subsample by the stride, append zero channels)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return F.relu(y + x)


def cifar_resnet(blocks_per_stage: int, in_channels: int, num_classes: int) -> nn.Module:
    """Conv16 + BN + ReLU, stages of basic blocks (16, 32, 64 channels), GAP, fc."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16, eps=1e-5, momentum=0.1),
        nn.ReLU(inplace=True),
    ]
    cin = 16
    for i, width in enumerate((16, 32, 64)):
        for b in range(blocks_per_stage):
            layers.append(BasicBlock(cin, width, 2 if (i > 0 and b == 0) else 1))
            cin = width
    layers += [GlobalAvgPool(), nn.Linear(64, num_classes)]
    return init_weights(nn.Sequential(*layers), conv_init=he_normal_fan_out_)


def allcnn_all_c(in_channels: int, num_classes: int) -> nn.Module:
    """All-CNN-C: dropout 0.2 on the input; 96-96-96/2, dropout 0.5; 192-192-192/2, dropout 0.5;
    conv3x3 192 VALID, 1x1 192, 1x1 classes (ReLU after every conv), GAP."""
    return init_weights(
        nn.Sequential(
            nn.Dropout(0.2),
            *conv_relu(in_channels, 96, 3, 1, 1),
            *conv_relu(96, 96, 3, 1, 1),
            *conv_relu(96, 96, 3, 2, 1),
            nn.Dropout(0.5),
            *conv_relu(96, 192, 3, 1, 1),
            *conv_relu(192, 192, 3, 1, 1),
            *conv_relu(192, 192, 3, 2, 1),
            nn.Dropout(0.5),
            *conv_relu(192, 192, 3),
            *conv_relu(192, 192, 1),
            *conv_relu(192, num_classes, 1),
            GlobalAvgPool(),
        )
    )


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 > 3x3 (stride) > 1x1 (4 x width), BN after each, ReLU after the first two
    and after the sum; a 1x1 projection (stride) + BN shortcut where the shape changes."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), batch_norm(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), batch_norm(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), batch_norm(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), batch_norm(cout))
            if stride > 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.shortcut(x))


def imagenet_resnet(stage_sizes: tuple[int, ...], in_channels: int, num_classes: int) -> nn.Module:
    """Conv 7x7/2 64 + BN + ReLU, max-pool 3x3/2 (padding 1), bottleneck stages of 64, 128, 256, 512 (stride 2
    from the second on), GAP, fc."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
        batch_norm(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for i, (size, width) in enumerate(zip(stage_sizes, (64, 128, 256, 512))):
        for b in range(size):
            layers.append(Bottleneck(cin, width, 2 if (i > 0 and b == 0) else 1))
            cin = 4 * width
    layers += [GlobalAvgPool(), nn.Linear(cin, num_classes)]
    return init_weights(nn.Sequential(*layers), conv_init=he_normal_fan_out_)


BUILDERS = {
    "seed_cnn": seed_cnn,
    "resnet20": lambda in_channels, num_classes: cifar_resnet(3, in_channels, num_classes),
    "allcnn_all_c": allcnn_all_c,
    "resnet50": lambda in_channels, num_classes: imagenet_resnet((3, 4, 6, 3), in_channels, num_classes),
}


def build(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """The torch twin of the cnn_jax model `name`."""
    return BUILDERS[name](in_channels, num_classes)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters and non-trainable state (batch-norm running statistics; not the step counter)."""
    buffers = [b for name, b in model.named_buffers() if not name.endswith("num_batches_tracked")]
    return {
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "non_trainable": sum(b.numel() for b in buffers),
    }
