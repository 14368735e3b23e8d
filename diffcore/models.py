"""Classifiers of the paper's tables, plus the embedded profile's small CNN.

| name               | used for (paper)                                              | built by            |
| ------------------ | ------------------------------------------------------------- | ------------------- |
| `preactresnet18`   | Table 3: Tiny-ImageNet-200 (64 px), CIFAR-100 (32 px)         | this file           |
| `preactresnet34`   | Table 2: Flowers-102, 10 images per class                     | this file           |
| `resnet50`         | Table 3: ImageNet-1K; Table 7: Stanford Cars ablation         | torchvision         |
| `densenet121`      | Table 4: CUB, Stanford Cars, Caltech-101                      | torchvision         |
| `wide_resnet101_2` | Table 5: ImageNet-pretrained, fine-tuned on CUB / Flowers-102 | torchvision         |
| `digits-cnn`       | embedded profile (bundled 32 px digits), a stand-in           | this file           |

torchvision models are always built with weights=None: pretrained weights only ever come from a local file the
user passes (safetensors, or a torch file read with weights_only=True, which runs no pickled code).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- PreActResNet-18 / -34
# He et al. 2016, "Identity mappings in deep residual networks", as coded by PuzzleMix (snu-mllab/PuzzleMix,
# models/preresnet.py), which Co-Mixup and GuidedMixup copy and whose baseline numbers the paper's tables quote.
# Two details of that code, kept here on purpose:
#   * no BN-ReLU after the last stage (He et al. have one; the reference code pools layer4's raw sum; GuidedMixup
#     has the final BN commented out), so the parameter count is the reference one (11,217,316 at 100 classes);
#   * the stem depends on the dataset (GuidedMixup FGVC/Model/preact_ResNet.py): 3x3 stride 1 for CIFAR (32 px),
#     3x3 stride 2 for Tiny-ImageNet (64 px), 7x7 stride 2 + 3x3 max-pool at 224 px, so that layer4 is 4x4
#     (7x7 at 224 px). The reference fixed-size AvgPool2d becomes an adaptive pool: identical there, any size works.
PREACT_STEMS = ("cifar", "tiny", "imagenet")


def preact_stem_for(image_size: int | None) -> str:
    """The reference code's stem for an input side in pixels (None: the CIFAR stem)."""
    if image_size is None or image_size <= 32:
        return "cifar"
    return "tiny" if image_size <= 64 else "imagenet"


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus identity (or a 1x1 projection of the pre-activated input)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        if stride != 1 or cin != cout:  # a Sequential, as in the reference, so checkpoint keys match
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, cin, H, W)
        out = F.relu(self.bn1(x))  # (B, cin, H, W), shared with the projection
        skip = self.shortcut(out) if hasattr(self, "shortcut") else x  # (B, cout, H/s, W/s)
        out = self.conv1(out)  # (B, cout, H/s, W/s)
        out = self.conv2(F.relu(self.bn2(out)))  # (B, cout, H/s, W/s)
        return out + skip


class PreActResNet(nn.Module):
    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int, stem: str = "cifar", width: int = 64):
        super().__init__()
        if stem not in PREACT_STEMS:
            raise ValueError(f"stem={stem!r}: expected one of {PREACT_STEMS}")
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(3, width, 3, 1 if stem == "cifar" else 2, 1, bias=False)
            self.maxpool = nn.Identity()
        cin, stages = width, []
        for i, n in enumerate(blocks):  # widths 64, 128, 256, 512; stages 2-4 halve the resolution
            cout = width * 2**i
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(*[PreActBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(n)])
            )
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, H, W)
        x = self.maxpool(self.conv1(x))  # (B, 64, H/s, W/s); s = 1, 2 or 4 by stem
        x = self.layer2(self.layer1(x))  # (B, 128, H/2s, W/2s)
        x = self.layer4(self.layer3(x))  # (B, 512, H/8s, W/8s): 4x4 at 32 and 64 px, 7x7 at 224
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 512)
        return self.linear(x)  # (B, num_classes)


# ---------------------------------------------------------------- the embedded profile's classifier
class DigitsCNN(nn.Module):
    """Three conv-BN-ReLU-maxpool blocks (32-64-128 channels), global average pool, linear: ~94k parameters.

    A stand-in for the paper's backbones on the bundled 32x32 digits; it reaches >90% test accuracy in a few
    CPU epochs. Numbers made with it are labelled as such, never put beside the paper's.
    """

    def __init__(self, num_classes: int, width: int = 32, in_channels: int = 3):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.features = nn.Sequential(block(in_channels, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, in_channels, 32, 32)
        x = self.features(x)  # (B, 128, 4, 4)
        return self.head(x.mean((2, 3)))  # (B, num_classes)


# ---------------------------------------------------------------- presets
def _torchvision(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, image_size: int | None = None) -> nn.Module:  # any input size: adaptive pool
        import torchvision  # lazy: importing diffcore.models stays cheap

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    "preactresnet18": lambda n, image_size=None: PreActResNet((2, 2, 2, 2), n, preact_stem_for(image_size)),
    "preactresnet34": lambda n, image_size=None: PreActResNet((3, 4, 6, 3), n, preact_stem_for(image_size)),
    "resnet50": _torchvision("resnet50"),
    "densenet121": _torchvision("densenet121"),
    "wide_resnet101_2": _torchvision("wide_resnet101_2"),
    "digits-cnn": lambda n, image_size=None: DigitsCNN(n),
}
# The final linear layer (replaced when fine-tuning) and the layer Grad-CAM reads (REFERENCE.md: ResNet
# `layer4`, DenseNet `features`; the PreActResNet's last stage; the digits CNN's last conv block).
CLASSIFIER_LAYERS = {
    "preactresnet18": "linear",
    "preactresnet34": "linear",
    "resnet50": "fc",
    "densenet121": "classifier",
    "wide_resnet101_2": "fc",
    "digits-cnn": "head",
}
SALIENCY_LAYERS = {
    "preactresnet18": "layer4",
    "preactresnet34": "layer4",
    "resnet50": "layer4",
    "densenet121": "features",
    "wide_resnet101_2": "layer4",
    "digits-cnn": "features.2",
}


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"model={name!r}: expected one of {', '.join(MODELS)}")


def classifier_layer(name: str, model: nn.Module) -> nn.Linear:
    """The final linear layer of a model built by `build_model(name, ...)`."""
    _check_name(name)
    return model.get_submodule(CLASSIFIER_LAYERS[name])


def saliency_layer(name: str, model: nn.Module) -> nn.Module:
    """The layer whose (B, C, h, w) output Grad-CAM weighs (diffcore.saliency.gradcam's `layer`)."""
    _check_name(name)
    return model.get_submodule(SALIENCY_LAYERS[name])


# ---------------------------------------------------------------- local pretrained weights
def where_to_get(name: str) -> str:
    if name in ("resnet50", "densenet121", "wide_resnet101_2"):
        import torchvision

        w = torchvision.models.get_model_weights(name).IMAGENET1K_V1  # what the baselines' `pretrained=True` gave
        return (
            f"download torchvision's ImageNet weights {type(w).__name__}.IMAGENET1K_V1 ({w.url}) on a "
            f"connected machine and pass that file"
        )
    return f"pass a state_dict saved from a {name} (torch.save or safetensors.torch.save_file)"


def load_weights(path: str | Path, name: str = "the model") -> dict[str, torch.Tensor]:
    """A state dict from a local file: .safetensors, or .pt/.pth read with torch.load(weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained={path}: no such file; {where_to_get(name)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix not in (".pt", ".pth"):
        raise ValueError(f"pretrained={path}: expected a .safetensors, .pt or .pth weights file")
    # weights_only=True: the unpickler accepts tensors and plain containers only, never a pickled callable
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint {"state_dict": ..., "epoch": ...}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained={path}: expected a state_dict (parameter name -> tensor)")
    return state


def load_pretrained(name: str, model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load `state` into `model`; returns the classifier keys skipped because the class count differs.

    Every other key must match exactly (names and shapes, none missing, none extra): only the classifier may
    differ, as when Table 5 fine-tunes an ImageNet-1K Wide-ResNet-101-2 on CUB / Flowers-102.
    """
    own = model.state_dict()
    head = CLASSIFIER_LAYERS[name]
    skipped = [k for k in (f"{head}.weight", f"{head}.bias") if k in state and state[k].shape != own[k].shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if wrong:
        raise ValueError(f"pretrained weights do not fit {name}: shape of {', '.join(wrong[:3])}")
    missing, unexpected = model.load_state_dict(state, strict=False)  # BN fills an absent num_batches_tracked
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise ValueError(
            f"pretrained weights do not fit {name}: missing {missing[:3]} ({len(missing)}), "
            f"unexpected {unexpected[:3]} ({len(unexpected)})"
        )
    return skipped


def build_model(
    name: str, num_classes: int, pretrained: str | Path | None = None, image_size: int | None = None
) -> nn.Module:
    """A classifier by name, on CPU in fp32.

    pretrained: a local weights file; a classifier with another class count is left freshly initialised.
    image_size: input side in pixels; only the PreActResNet stem depends on it (None: the 32 px CIFAR stem).
    """
    _check_name(name)
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: expected >= 2")
    if pretrained is not None:
        state = load_weights(pretrained, name)  # before building: a bad path fails before any heavy work
    model = MODELS[name](num_classes, image_size=image_size)
    if pretrained is not None:
        skipped = load_pretrained(name, model, state)
        log.info(
            "pretrained=%s: loaded into %s%s",
            pretrained,
            name,
            f"; skipped {skipped} (checkpoint has {state[skipped[0]].shape[0]} classes, model {num_classes})"
            if skipped
            else "",
        )
    return model
