"""Classifiers used in the paper's tables, plus the embedded profile's small CNN.

PreActResNet-18/34 (Tables 2-3) are written here in the CIFAR-style form used by PuzzleMix / Co-Mixup /
GuidedMixup: 3x3 stem, no max-pool. ResNet-50, DenseNet-121 and Wide-ResNet-101-2 come from torchvision with
weights=None; pretrained weights only ever come from a local file (safetensors, or torch.load(weights_only=True)).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- PreActResNet (He et al. 2016, identity mappings)
class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))                       # pre-activation, shared by the shortcut projection
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)                           # (B, cout, H/s, W/s)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int, width: int = 64):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)  # 3x3, stride 1: CIFAR / Tiny-ImageNet inputs
        stages, cin = [], width
        for i, n in enumerate(blocks):
            cout, stride = width * 2 ** i, 1 if i == 0 else 2
            stages.append(nn.Sequential(*[PreActBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1)
                                          for j in range(n)]))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.stem(x)                                                    # (B, 64, H, W)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))           # (B, 512, H/8, W/8)
        x = F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1).flatten(1)         # (B, 512)
        return self.linear(x)


# ---------------------------------------------------------------- the embedded profile's classifier
class DigitsCNN(nn.Module):
    """Three conv blocks for 32x32 digits; small enough to train in seconds per epoch on a laptop CPU."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.features(x)                          # (B, 128, H/8, W/8)
        return self.head(x.mean((2, 3)))              # (B, num_classes)


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    return build


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "preactresnet18": lambda n: PreActResNet((2, 2, 2, 2), n),
    "preactresnet34": lambda n: PreActResNet((3, 4, 6, 3), n),
    "resnet50": _torchvision("resnet50"),
    "densenet121": _torchvision("densenet121"),
    "wide_resnet101_2": _torchvision("wide_resnet101_2"),
    "digits-cnn": DigitsCNN,
}


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The final linear layer (replaced when fine-tuning on a new label set)."""
    for attr in ("fc", "classifier", "linear", "head"):
        layer = getattr(model, attr, None)
        if isinstance(layer, nn.Linear):
            return layer
    raise ValueError(f"{type(model).__name__}: no final linear layer named fc/classifier/linear/head")


def saliency_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM reads (REFERENCE: ResNet `layer4`, DenseNet `features`)."""
    for attr in ("layer4", "features"):
        if hasattr(model, attr):
            return getattr(model, attr)
    raise ValueError(f"{type(model).__name__}: no layer4/features for Grad-CAM")


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file: safetensors, or a torch file read with weights_only=True (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained={path}: no such file. Save e.g. torchvision's ImageNet weights "
                                f"(Wide_ResNet101_2_Weights.IMAGENET1K_V2) there on a connected machine")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def build_model(name: str, num_classes: int, pretrained: str | Path | None = None) -> nn.Module:
    """A classifier by name; with `pretrained`, every weight but a mismatched classifier comes from that file."""
    if name not in MODELS:
        raise ValueError(f"model={name!r}: expected one of {sorted(MODELS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: expected >= 2")
    model = MODELS[name](num_classes)
    if pretrained is not None:
        state = load_weights(pretrained)
        head = classifier_layer(model)
        head_keys = {f"{n}.{p}" for n, m in model.named_modules() if m is head for p in ("weight", "bias")}
        mismatched = {k for k in head_keys if k in state and state[k].shape != model.state_dict()[k].shape}
        missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in mismatched},
                                                    strict=False)
        if unexpected or set(missing) - mismatched:
            raise ValueError(f"pretrained={pretrained} does not fit model={name}: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
    return model
