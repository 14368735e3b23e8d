"""Every training method behind one interface: `build_method(name, **hparams).forward(model, batch, gen)`."""

from .base import REGISTRY, Batch, Method, build_method, mixed_loss, register
from . import paired  # noqa: F401  (registers vanilla, genaug, pixel, patch, diffcore)
from . import mixup  # noqa: F401  (mixup, cutmix, resizemix, manifold-mixup)
from . import augment  # noqa: F401  (augmix, pixmix)
from . import saliency_guided  # noqa: F401  (saliencymix, snapmix, puzzlemix, comixup, guided-ap[-random])
from . import diffusemix  # noqa: F401  (diffusemix)

__all__ = ["REGISTRY", "Batch", "Method", "build_method", "mixed_loss", "register"]
