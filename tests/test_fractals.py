"""Procedural fractals: seeded, independent of the bank size, in range, not degenerate, written as PNGs."""

import pytest
import torch
from PIL import Image

from diffcore.methods.fractals import FractalConfig, fractal, fractal_bank, save_fractals


def test_fractal_is_a_pure_function_of_seed_index_and_size():
    a = fractal(3, 24, seed=7)
    assert a.shape == (3, 24, 24) and a.dtype == torch.float32
    assert torch.equal(a, fractal(3, 24, seed=7))
    assert not torch.equal(a, fractal(3, 24, seed=8)) and not torch.equal(a, fractal(4, 24, seed=7))
    assert torch.equal(fractal_bank(2, 24, 7)[1], fractal_bank(4, 24, 7)[1])  # same whatever the bank size


def test_fractals_are_in_range_coloured_and_not_degenerate():
    bank = fractal_bank(6, 32, 0)
    assert bank.shape == (6, 3, 32, 32) and bank.min() >= 0 and bank.max() <= 1
    lit = (bank.amax(1) > 0.05).flatten(1).float().mean(1)
    assert (lit >= FractalConfig().min_coverage).all()
    assert (bank.std((2, 3)).mean(1) > 0.01).all()  # structure, not a flat image
    assert not torch.allclose(bank[:, 0], bank[:, 1])  # coloured, not grey
    assert fractal_bank(6, 32, 0) is bank  # cached


def test_save_fractals_writes_readable_pngs(tmp_path):
    paths = save_fractals(tmp_path / "fr", 2, 16, seed=1)
    assert [p.name for p in paths] == ["fractal_00000.png", "fractal_00001.png"]
    with Image.open(paths[1]) as im:
        assert im.size == (16, 16) and im.mode == "RGB"


@pytest.mark.parametrize(
    "kw, word",
    [({"maps_min": 3, "maps_max": 2}, "maps_min"), ({"scale_max": 1.0}, "scale"), ({"walkers": 0}, "walkers")],
)
def test_bad_config_fails_loudly(kw, word):
    with pytest.raises(ValueError, match=word):
        FractalConfig(**kw)
    with pytest.raises(ValueError, match="size"):
        fractal(0, 2)
