"""The PyTorch reference of the benchmarks: torchvision models trained the plain way (eager).

PyTorch is an optional benchmark extra (``pip install -e .[bench]``); where it is missing
the benchmarks say "not installed" in the reference's row instead of failing. The models
are torchvision's, with an ``n_classes`` head, in ``train()`` mode with Adam and
cross-entropy: what the competition's baseline ran (``train.py`` of the official code).
"""
from __future__ import annotations

import os

#: our backbone name -> torchvision constructor
TORCHVISION = {"efficientnet_b0": "efficientnet_b0", "efficientnet_b2": "efficientnet_b2",
               "efficientnet_b3": "efficientnet_b3", "resnet50": "resnet50", "resnet152": "resnet152",
               "convnext_tiny": "convnext_tiny", "resnext50": "resnext50_32x4d"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def available() -> str | None:
    """None when torch and torchvision import, else the reason (for the table's row)."""
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return f"not installed ({type(e).__name__}: {e}; pip install -e '.[bench]')"
    return None


def set_threads() -> int:
    """As many intra-op threads as this process may use (JAX and TF do the same)."""
    import torch

    n = len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def tiny_cnn(n_classes: int):
    """``mask_keras``' ``tiny_cnn`` written in PyTorch: four conv(3x3, no bias)-BN-ReLU-maxpool(2)
    blocks of 32/64/128/256 filters, global average pooling, a linear classifier."""
    from torch import nn

    layers, c = [], 3
    for f in (32, 64, 128, 256):
        layers += [nn.Conv2d(c, f, 3, padding=1, bias=False), nn.BatchNorm2d(f), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        c = f
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes))


def create_model(backbone: str, n_classes: int, seed: int = 0):
    """A torchvision model (or :func:`tiny_cnn`) with a fresh ``n_classes`` head, no pretrained weights."""
    import torch
    import torchvision

    if backbone not in TORCHVISION and backbone != "tiny_cnn":
        raise SystemExit(f"no torchvision reference for {backbone!r}; choose from {sorted(TORCHVISION)} or tiny_cnn")
    torch.manual_seed(seed)
    if backbone == "tiny_cnn":
        return tiny_cnn(n_classes)
    return getattr(torchvision.models, TORCHVISION[backbone])(weights=None, num_classes=n_classes)


def to_tensor(images_uint8):
    """``(B, H, W, 3)`` uint8 numpy -> ``(B, 3, H, W)`` float tensor, ImageNet-normalised."""
    import torch

    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


class Trainer:
    """One eager training step (Adam, cross-entropy) and eval-mode inference of a model."""

    def __init__(self, model, lr: float = 1e-3):
        import torch

        self.torch = torch
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr)

    def step(self, x, y) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def predict(self, x):
        self.model.eval()
        with self.torch.inference_mode():
            return self.torch.softmax(self.model(x), dim=1)
