"""Reading one image file safely: a size limit checked before decoding, any mode converted to 8-bit RGB."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

# Larger images are skipped, never decoded: PIL's own decompression-bomb limit (it only warns below twice this).
# 89.5 Mpx is 3x the largest image of the paper's datasets' usual sources and ~270 MB decoded as RGB.
MAX_IMAGE_PIXELS = 89_478_485


def open_checked(path: str | Path) -> Image.Image:
    """Image.open, refusing images over MAX_IMAGE_PIXELS before anything is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
        im = Image.open(path)
    if im.width * im.height > MAX_IMAGE_PIXELS:
        im.close()
        raise ValueError(f"{im.width}x{im.height} pixels is over MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS}")
    return im


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB from any mode. 16/32-bit grayscale is rescaled (PIL's convert would clip it to 255, i.e. white)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im, dtype=np.float64)  # (H, W) in 0..65535 (16-bit PNG / TIFF)
        im = Image.fromarray(np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8))
    elif im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))  # (H, W) float TIFF: [0, 1] if it fits, else 0..255
        im = Image.fromarray(np.clip(np.round(a * 255 if a.max() <= 1.0 else a), 0, 255).astype(np.uint8))
    return im.convert("RGB")  # gray, palette, RGBA (alpha dropped, as torchvision's loader), CMYK, LA, ...


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as 8-bit RGB. Gray, 16-bit, palette, RGBA, CMYK are converted; truncated files raise."""
    with open_checked(path) as im:
        return to_rgb(im)  # convert() decodes fully, so the file handle can close here
