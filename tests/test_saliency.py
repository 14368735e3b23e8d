"""Grad-CAM follows the evidence: an object in the top-left corner gets the map there."""

import torch

from diffcore.saliency import gradcam


class MeanNet(torch.nn.Module):
    """1x1 conv features, global mean pooling, class 1 = channel 1 (positive weights), class 0 = constant."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(3, 2, 1, bias=False)
        torch.nn.init.constant_(self.features.weight, 1.0)

    def forward(self, x):
        f = self.features(x)  # (B, 2, H, W)
        return torch.stack([f[:, 0].mean((1, 2)) * 0, f[:, 1].mean((1, 2))], 1)  # (B, 2)


def test_gradcam_is_in_unit_range_at_input_size_and_peaks_on_the_object():
    x = torch.zeros(3, 3, 16, 16)
    x[:, :, :4, :4] = 1.0  # the "object"
    x += 0.01 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    net = MeanNet()
    cam = gradcam(net, net.features, x, torch.tensor([1, 1, 1]))
    assert cam.shape == (3, 16, 16) and cam.min() >= 0 and cam.max() <= 1
    assert torch.allclose(cam.flatten(1).amax(1), torch.ones(3))
    assert cam[:, :3, :3].mean() > 0.9 and cam[:, 8:, 8:].mean() < 0.05
    assert torch.equal(gradcam(net, net.features, x), gradcam(net, net.features, x, torch.tensor([1, 1, 1])))
