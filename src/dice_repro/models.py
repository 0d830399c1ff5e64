"""The models of SPEC §6 (plus logistic regression), all usable by the functional engine."""

from __future__ import annotations

import torch
from torch import nn

MODEL_NAMES = ("logreg", "mlp", "cnn", "resnet18_micro")


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: the convex model the estimator tests use."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = input_shape
        self.linear = nn.Linear(c * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class MLP(nn.Module):
    """flatten → 128 → ReLU → 64 → ReLU → classes (the paper's MLP)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = input_shape
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """conv3×3(32)+ReLU+pool → conv3×3(64)+ReLU+pool → linear(128) → linear(classes) (the paper's CNN)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, 128), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resnet18_micro(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """torchvision ResNet-18 with stride-1 first conv and max-pool, for 28×28 inputs.

    Batch norm keeps no running statistics: the paper always runs models in training mode
    (batch statistics), and stateless normalisation is what lets the engine vmap over nodes.
    """
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=1, padding=3, bias=False)
    model.maxpool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.track_running_stats = False
            module.running_mean = None
            module.running_var = None
    return model


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Instantiate a model by name with the current global RNG state (seed before calling)."""
    builders = {
        "logreg": LogisticRegression,
        "mlp": MLP,
        "cnn": CNN,
        "resnet18_micro": resnet18_micro,
    }
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if name == "cnn" and min(input_shape[1:]) < 10:
        raise ValueError(
            f"the CNN needs images of at least 10×10 pixels, got {input_shape[1]}×{input_shape[2]}; "
            "use the MLP or logreg for the 8×8 'digits' data set, or set image_size: 28"
        )
    return builders[name](input_shape, num_classes)
