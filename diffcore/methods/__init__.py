"""Every training method behind one interface: `build_method(name, **hparams).forward(model, batch, gen)`."""
from .base import REGISTRY, Batch, Method, build_method, mixed_loss, register
from . import paired  # noqa: F401  (registers vanilla, genaug, pixel, patch, diffcore)

__all__ = ["REGISTRY", "Batch", "Method", "build_method", "mixed_loss", "register"]
