"""The device loader: decode-once cache round trip, crop boxes with RandomResizedCrop's rules, batch augmentation."""

import numpy as np
import pytest
import torch
from PIL import Image

from diffcore.engine import loader as L


def _gradient(w, h):
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    return Image.fromarray(
        np.concatenate(
            [np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 7, np.float32)], 2
        ).astype(np.uint8)
    )


def test_decode_square_resizes_short_side_and_centre_crops():
    out = L.decode_square(_gradient(400, 200).convert("L").convert("RGB"), 50)
    assert out.shape == (50, 50, 3) and out.dtype == np.uint8
    wide = L.decode_square(_gradient(400, 200), 50)
    # centre crop of a horizontal ramp: the middle column is the ramp's middle value
    assert abs(int(wide[25, 25, 0]) - 128) <= 3
    assert wide[:, :, 2].min() == wide[:, :, 2].max() == 7


def test_cache_fills_once_and_reloads(tmp_path):
    calls = []

    def load(i):
        calls.append(i)
        return _gradient(30 + i, 20)

    c = L.DecodedCache(tmp_path / "c.npy", 4, 16).fill(load, threads=2)
    assert sorted(calls) == [0, 1, 2, 3] and c.ready()
    again = L.DecodedCache(tmp_path / "c.npy", 4, 16).fill(load, threads=2)
    assert sorted(calls) == [0, 1, 2, 3]  # not decoded twice
    for i in range(4):
        assert torch.equal(again[i], torch.from_numpy(L.decode_square(_gradient(30 + i, 20), 16)).permute(2, 0, 1))
    with pytest.raises(ValueError, match="delete it to rebuild"):
        L.DecodedCache(tmp_path / "c.npy", 5, 16).fill(load)


def test_random_resized_boxes_follow_torchvision_limits():
    g = torch.Generator().manual_seed(0)
    b = L.random_resized_boxes(4000, 64, g, "cpu")
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert (b[:, :2] >= 0).all() and (b[:, 2:] <= 64).all() and (w >= 1).all() and (h >= 1).all()
    area = w * h / 64**2
    assert area.min() >= 0.07 and area.max() <= 1.0
    ratio = (w / h)[area < 0.5]  # small boxes are never clipped to the image, so their aspect is in range
    assert ratio.min() > 0.7 and ratio.max() < 1.4
    assert torch.equal(b, L.random_resized_boxes(4000, 64, torch.Generator().manual_seed(0), "cpu"))


def test_device_augment_shapes_normalisation_and_digits_never_flip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).remainder(256).to(torch.uint8).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = L.device_augment(x, 8, "imagenet", (0.5,) * 3, (0.5,) * 3, g)
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
    assert out.min() >= -1.0 - 1e-5 and out.max() <= 1.0 + 1e-5  # (p/255 - 0.5) / 0.5
    # digits: a pad-crop by at most 2 px; with zero shift it is the identity
    ident = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    ident[:, :, 2:6, 3:5] = 255
    for seed in range(20):
        o = L.device_augment(ident, 8, "digits", (0.0,) * 3, (1.0 / 255,) * 3, torch.Generator().manual_seed(seed))
        # the blob keeps its size (4 x 2): pad-crop shifts, never flips or rescales
        assert int((o[0, 0] > 127).sum()) == 8


def test_to_device_batch_crops_real_and_generated_independently():
    real = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    batch = (real, real.clone(), torch.tensor([0, 1, 2]), torch.tensor([True, True, False]))
    r, gen, y, p = L.to_device_batch(
        batch, 12, "imagenet", (0.5,) * 3, (0.5,) * 3, torch.Generator().manual_seed(0), torch.device("cpu")
    )
    assert r.shape == gen.shape == (3, 3, 12, 12) and y.tolist() == [0, 1, 2] and p.tolist() == [True, True, False]
    assert not torch.equal(r, gen)  # same pixels in, different crops out


def test_pad_crop_is_an_exact_integer_shift_with_zero_padding():
    x = torch.arange(1 * 1 * 6 * 6, dtype=torch.float32).view(1, 1, 6, 6) + 1
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        off = torch.randint(0, 5, (1, 2), generator=torch.Generator().manual_seed(seed))[0] - 2  # the same draw
        out = L.pad_crop(x, 2, g)
        dy, dx = int(off[0]), int(off[1])
        ref = torch.zeros_like(x)
        ys, xs = slice(max(0, -dy), min(6, 6 - dy)), slice(max(0, -dx), min(6, 6 - dx))
        ref[..., ys, xs] = x[..., max(0, dy) : min(6, 6 + dy), max(0, dx) : min(6, 6 + dx)]
        assert torch.equal(out, ref)
