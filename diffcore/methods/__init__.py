"""Every training method behind one interface: `build_method(name, **hparams).forward(model, batch, gen)`."""

from . import (
    augment,  # noqa: F401  (augmix, pixmix)
    diffusemix,  # noqa: F401  (diffusemix)
    mixup,  # noqa: F401  (mixup, cutmix, resizemix, manifold-mixup)
    paired,  # noqa: F401  (registers vanilla, genaug, pixel, patch, diffcore)
    saliency_guided,  # noqa: F401  (saliencymix, snapmix, puzzlemix, comixup, guided-ap[-random])
)
from .base import REGISTRY, Batch, Method, build_method, mixed_loss, register

__all__ = ["REGISTRY", "Batch", "Method", "build_method", "mixed_loss", "register"]
