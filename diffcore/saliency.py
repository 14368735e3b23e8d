"""Grad-CAM saliency (paper Fig. 5) with captum: where does a trained classifier look?"""

from __future__ import annotations

import torch


def gradcam(
    model: torch.nn.Module, layer: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, H, W) Grad-CAM maps in [0, 1], upsampled to the input size.

    images: (B, C, H, W) normalised as for training. targets: (B,) class ids; None -> the predicted classes.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    if targets is None:
        with torch.no_grad():
            targets = model(images).argmax(1)  # (B,)
    cam = LayerGradCam(model, layer).attribute(images, target=targets, relu_attributions=True)  # (B, 1, h, w)
    cam = LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear")  # (B, 1, H, W)
    cam = cam[:, 0].detach()  # (B, H, W)
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).clamp(0, 1)
