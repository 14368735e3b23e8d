"""Classifiers: shapes, the PreActResNet sizes and stems, local pretrained loading that never runs pickled code."""

import logging
import os

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from diffcore.models import MODELS, build_model, classifier_layer, saliency_layer


@pytest.fixture(autouse=True)
def one_thread():
    """Batch-2 forwards are tiny: with 2 busy shared cores, intra-op threads spin-wait (DenseNet: 3 s vs 25 ms)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


NAMES = ["preactresnet18", "preactresnet34", "resnet50", "densenet121", "wide_resnet101_2", "digits-cnn"]


def test_presets_are_the_six_names():
    assert list(MODELS) == NAMES


@pytest.mark.parametrize(
    "name,size",
    [
        ("digits-cnn", 32),
        ("preactresnet18", 32),
        ("preactresnet34", 32),
        ("resnet50", 64),
        ("densenet121", 64),
        ("wide_resnet101_2", 64),
    ],
)
def test_output_shape_saliency_and_classifier_layers(name, size):
    model = build_model(name, 7).eval()
    seen = []
    saliency_layer(name, model).register_forward_hook(lambda m, i, out: seen.append(out.shape))
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 7)
    assert len(seen) == 1 and len(seen[0]) == 4 and seen[0][0] == 2  # Grad-CAM needs a (B, C, h, w) map
    head = classifier_layer(name, model)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 7


def _layer4_side(image_size, input_side):
    with torch.device("meta"):  # shapes only: no weights allocated, no arithmetic
        model = build_model("preactresnet18", 10, image_size=image_size)
        seen = []
        model.layer4.register_forward_hook(lambda m, i, out: seen.append(out.shape))
        assert model(torch.empty(1, 3, input_side, input_side)).shape == (1, 10)
    return seen[0][-1]


def test_preact_stem_follows_the_reference_per_input_size():
    # PuzzleMix / GuidedMixup pool a 4x4 layer4 at 32 and 64 px (stem stride 1 / 2) and a 7x7 one at 224 px
    assert _layer4_side(32, 32) == 4 and _layer4_side(64, 64) == 4 and _layer4_side(224, 224) == 7
    assert _layer4_side(None, 64) == 8  # default CIFAR stem: 64 px still works, through the adaptive pool


def test_preactresnet18_parameter_count_matches_formula_and_reference():
    def count(name, n):
        return sum(p.numel() for p in build_model(name, n).parameters())

    def block(cin, cout):  # BN(cin), 3x3 conv, BN(cout), 3x3 conv, a 1x1 projection when the width changes
        return 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout + (cin * cout if cin != cout else 0)

    stages = sum(block(a, b) + block(b, b) for a, b in ((64, 64), (64, 128), (128, 256), (256, 512)))
    assert count("preactresnet18", 100) == 9 * 3 * 64 + stages + 512 * 100 + 100 == 11_217_316
    assert count("preactresnet18", 10) == 11_171_146  # kuangliu/pytorch-cifar's PreActResNet18, same layers
    assert count("preactresnet34", 100) > 21_000_000

    # every conv but the stem has the shape of torchvision's ResNet-18 (1x1 projections = its downsample convs)
    def convs(model):
        return sorted(
            tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and n != "conv1"
        )

    assert convs(build_model("preactresnet18", 100)) == convs(torchvision.models.resnet18(weights=None))


def test_unknown_name_and_bad_class_count_fail_with_the_known_names():
    known = "preactresnet18, preactresnet34, resnet50, densenet121, wide_resnet101_2, digits-cnn"
    with pytest.raises(ValueError, match=f"model='vgg16': expected one of {known}$"):
        build_model("vgg16", 10)
    with pytest.raises(ValueError, match="model='vgg16'"):
        saliency_layer("vgg16", torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="num_classes=1: expected >= 2"):
        build_model("digits-cnn", 1)


def test_missing_weights_file_says_where_to_get_them(tmp_path):
    path = tmp_path / "wrn101.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_model("wide_resnet101_2", 200, pretrained=path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "no such file" in msg
    assert "Wide_ResNet101_2_Weights.IMAGENET1K_V1" in msg and "wide_resnet101_2-32ee1156.pth" in msg
    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="expected a .safetensors, .pt or .pth"):
        build_model("digits-cnn", 10, pretrained=tmp_path / "w.bin")


def _trained_digits_cnn():
    """A digits-cnn whose BN running statistics are no longer the defaults, so buffers are checked too."""
    model = build_model("digits-cnn", 10).train()
    model(torch.randn(4, 3, 32, 32))
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _save(state, path):
    if path.suffix == ".safetensors":
        save_file(state, path)
    elif path.name.startswith("ckpt"):
        torch.save({"state_dict": state, "epoch": 3}, path)  # a training checkpoint wrapping the state dict
    else:
        torch.save(state, path)


@pytest.mark.parametrize("file", ["w.safetensors", "w.pt", "ckpt.pth"])
def test_pretrained_round_trip_skips_only_the_mismatched_classifier(tmp_path, caplog, file):
    state, path = _trained_digits_cnn(), tmp_path / file
    _save(state, path)
    same = build_model("digits-cnn", 10, pretrained=path)
    assert all(torch.equal(v, state[k]) for k, v in same.state_dict().items())
    with caplog.at_level(logging.INFO, logger="diffcore.models"):
        other = build_model("digits-cnn", 4, pretrained=path)
    assert "skipped ['head.weight', 'head.bias'] (checkpoint has 10 classes, model 4)" in caplog.text
    for k, v in other.state_dict().items():
        if k.startswith("head."):
            assert v.shape[0] == 4
        else:
            assert torch.equal(v, state[k]), k


def test_pretrained_is_strict_on_every_other_key(tmp_path):
    state = _trained_digits_cnn()
    cases = {
        "missing": {k: v for k, v in state.items() if k != "features.0.1.running_var"},
        "unexpected": {**state, "extra.weight": torch.zeros(3)},
        "shape": {**state, "features.0.0.weight": torch.zeros(16, 3, 3, 3)},
    }
    for what, bad in cases.items():
        save_file(bad, tmp_path / f"{what}.safetensors")
    with pytest.raises(ValueError, match=r"missing \[.features.0.1.running_var.\]"):
        build_model("digits-cnn", 4, pretrained=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match=r"unexpected \['extra.weight'\]"):
        build_model("digits-cnn", 4, pretrained=tmp_path / "unexpected.safetensors")
    with pytest.raises(ValueError, match=r"shape of features.0.0.weight \(16, 3, 3, 3\) vs \(32, 3, 3, 3\)"):
        build_model("digits-cnn", 4, pretrained=tmp_path / "shape.safetensors")


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling calls os.system("touch <marker>")
        return os.system, (f"touch {self.marker}",)


def test_pickled_checkpoint_carrying_code_is_refused_and_never_run(tmp_path):
    marker, path = tmp_path / "code-ran", tmp_path / "evil.pt"
    torch.save({"head.weight": _RunsAShellCommand(marker)}, path)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported global"):
        build_model("digits-cnn", 10, pretrained=path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # control: a plain unpickle of the same file does run the payload
    assert marker.exists()
