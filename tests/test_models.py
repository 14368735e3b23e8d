"""Classifiers: shapes, the PreActResNet-18 size, local pretrained loading that never runs pickled code."""
import os

import pytest
import torch
from safetensors.torch import save_file

from diffcore.models import MODELS, build_model, classifier_layer, saliency_layer


@pytest.mark.parametrize("name,size", [("digits-cnn", 32), ("preactresnet18", 32), ("preactresnet34", 32),
                                       ("resnet50", 64), ("densenet121", 64), ("wide_resnet101_2", 64)])
def test_output_shape_and_saliency_layer(name, size):
    model = build_model(name, 7).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 7)
    assert isinstance(saliency_layer(model), torch.nn.Module)
    assert classifier_layer(model).out_features == 7


def test_preactresnet18_has_the_usual_11_2m_parameters():
    n = sum(p.numel() for p in build_model("preactresnet18", 100).parameters())

    def block(cin, cout):  # BN(cin) + 3x3 conv + BN(cout) + 3x3 conv (+ 1x1 projection when the shape changes)
        return 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout + (cin * cout if cin != cout else 0)

    stages = sum(block(cin, cout) + block(cout, cout) for cin, cout in ((64, 64), (64, 128), (128, 256), (256, 512)))
    assert n == 9 * 3 * 64 + stages + 2 * 512 + 512 * 100 + 100 == 11_218_340
    assert sum(p.numel() for p in build_model("preactresnet34", 100).parameters()) > n


def test_unknown_model_and_bad_class_count():
    with pytest.raises(ValueError, match="model='vgg16': expected one of"):
        build_model("vgg16", 10)
    with pytest.raises(ValueError, match="num_classes=1"):
        build_model("digits-cnn", 1)
    with pytest.raises(FileNotFoundError, match="pretrained=.*no such file"):
        build_model("digits-cnn", 10, pretrained="/no/weights.safetensors")


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_pretrained_round_trip_skips_only_a_mismatched_classifier(tmp_path, fmt):
    src = build_model("digits-cnn", 10)
    path = tmp_path / f"w.{fmt}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    same = build_model("digits-cnn", 10, pretrained=path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), same.state_dict().values()))
    other = build_model("digits-cnn", 4, pretrained=path)
    for k, v in other.state_dict().items():
        if k.startswith("head."):
            assert v.shape[0] == 4
        else:
            assert torch.equal(v, src.state_dict()[k])


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {EXPLOIT_MARK}",))


EXPLOIT_MARK = "/tmp/diffcore-exploit-ran"


def test_pickled_checkpoint_carrying_code_is_refused(tmp_path):
    if os.path.exists(EXPLOIT_MARK):
        os.remove(EXPLOIT_MARK)
    path = tmp_path / "evil.pt"
    torch.save({"head.weight": Exploit()}, path)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        build_model("digits-cnn", 10, pretrained=path)
    assert not os.path.exists(EXPLOIT_MARK)
