"""Built-in model architectures. Factories are addressable as `mlwarden.core.zoo:NAME`."""
from __future__ import annotations

import math

from torch import nn


class MLP(nn.Module):
    def __init__(self, input_shape, n_classes: int, hidden=(128, 64)):
        super().__init__()
        d = math.prod(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3x3 conv layers and a linear head; sized for 8x8 digits, works for 28x28 too."""

    def __init__(self, input_shape, n_classes: int, width: int = 32):
        super().__init__()
        c, h, w = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * (h // 2) * (w // 2), 128), nn.ReLU(),
                                  nn.Linear(128, n_classes))

    def forward(self, x):
        return self.head(self.features(x))


class LogReg(nn.Module):
    def __init__(self, input_shape, n_classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_classes))

    def forward(self, x):
        return self.net(x)


class CharLM(nn.Module):
    """Character language model over a fixed window: embeddings of the last `context` characters ->
    MLP -> next-character logits (a Bengio et al. 2003 style neural n-gram model). Inputs are character
    ids stored as floats, like every mlwarden data set; Opacus can train it (Embedding + Linear)."""

    def __init__(self, input_shape, n_classes: int, dim: int = 16, hidden: int = 256):
        super().__init__()
        (context,) = input_shape
        self.embed = nn.Embedding(n_classes, dim)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(context * dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x):
        return self.net(self.embed(x.long()))


class Square(nn.Module):
    """x * x: the activation a CKKS-encrypted network can compute (one multiplication; Gilad-Bachrach et al.
    2016, CryptoNets)."""

    def forward(self, x):
        return x * x


def square_mlp(input_shape, n_classes, hidden: int = 32):
    """Linear -> square -> linear: small enough for encrypted inference (mlwarden serve --encrypted)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), Square(), nn.Linear(hidden, n_classes))


def mlp(input_shape, n_classes):
    return MLP(input_shape, n_classes)


def cnn(input_shape, n_classes):
    return SmallCNN(input_shape, n_classes)


def logreg(input_shape, n_classes):
    return LogReg(input_shape, n_classes)


def tabular_mlp(input_shape, n_classes):
    return MLP(input_shape, n_classes, hidden=(64,))


def sigmoid_mlp(input_shape, n_classes):
    """One hidden layer of 100 sigmoid units: the kind of network gradient-leakage papers attack (Zhu et al. 2019)."""
    d = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 100), nn.Sigmoid(), nn.Linear(100, n_classes))


def sigmoid_lenet(input_shape, n_classes):
    """The LeNet of the DLG paper (Zhu et al. 2019: three 5x5 convolutions of 12 channels, sigmoid, strides 2, 2,
    1 on 32x32), with strides 2, 1, 1 for 8x8 digits."""
    c, h, w = input_shape
    return nn.Sequential(nn.Conv2d(c, 12, 5, padding=2, stride=2), nn.Sigmoid(),
                         nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid(),
                         nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid(),
                         nn.Flatten(), nn.Linear(12 * ((h + 1) // 2) * ((w + 1) // 2), n_classes))


def charlm(input_shape, n_classes):
    return CharLM(input_shape, n_classes)


ARCHITECTURES = {"mlp": mlp, "cnn": cnn, "logreg": logreg, "tabular-mlp": tabular_mlp, "charlm": charlm,
                 "sigmoid-mlp": sigmoid_mlp, "square-mlp": square_mlp,
                 "sigmoid-lenet": sigmoid_lenet}
