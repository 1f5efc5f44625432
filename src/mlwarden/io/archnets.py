"""mlwarden's own definitions of well-known image classifiers, used by `--arch NAME` when neither torchvision
nor timm is installed. Each one has the parameter and buffer names and shapes of torchvision's network of the
same name, so a state dict saved from torchvision (or from timm's ResNets, which use the same names) loads
here unchanged, and computes the same function.

- ResNet-18/34/50: He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
  (Table 1: a 7x7/2 convolution and 3x3/2 max pooling, four stages of basic blocks (two 3x3 convolutions) or
  bottleneck blocks (1x1, 3x3, 1x1 with 4x expansion), global average pooling and one fully connected layer;
  batch normalisation after every convolution; projection shortcuts (option B: a strided 1x1 convolution and
  batch normalisation) where the shape changes). As in torchvision ("ResNet v1.5"), a bottleneck block
  strides in its 3x3 convolution rather than the first 1x1 one; parameter names and shapes are the same
  either way, the function is torchvision's.
- MobileNetV2: Sandler, Howard, Zhu, Zhmoginov and Chen, "MobileNetV2: Inverted Residuals and Linear
  Bottlenecks", CVPR 2018 (Table 2: the (t, c, n, s) stages, ReLU6, linear bottlenecks, residuals where
  stride is 1 and widths match; a 1x1 convolution to 1280 channels, average pooling, dropout 0.2, a linear
  classifier).
- VGG-11/16 (configurations A and D, without batch normalisation): Simonyan and Zisserman, "Very Deep
  Convolutional Networks for Large-Scale Image Recognition", ICLR 2015 (Table 1: 3x3 convolutions with
  padding 1, 2x2 max pooling, two 4096-wide fully connected layers with dropout, and the classifier); as in
  torchvision, an adaptive 7x7 average pooling before the classifier. VGG pools five times: it needs images
  of at least 32x32.

Global average pooling (adaptive) lets ResNets and MobileNetV2 take small images too (digits 8x8,
MNIST 28x28); the first convolution takes any number of input channels.
"""
from __future__ import annotations

from torch import Tensor, nn


def _conv_bn_init(module: nn.Module, linear_std: float | None = None) -> None:
    """He initialisation (fan-out) for convolutions, unit scale and zero shift for batch normalisation, and
    with `linear_std` N(0, std) weights and zero biases for linear layers (else PyTorch's default)."""
    for m in module.modules():
        if isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _shortcut(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    """Option B of He et al.: a projection (1x1 convolution, batch norm) where the shape changes."""
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), nn.BatchNorm2d(outplanes))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and the shortcut (ResNet-18/34)."""
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(inplanes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 (reduce), 3x3 (strided, as in torchvision), 1x1 (expand 4x) and the shortcut (ResNet-50)."""
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(inplanes, out, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """He et al. 2016, Table 1: stem, four stages (64, 128, 256, 512 planes; stages 2-4 halve the size), global
    average pooling, fully connected layer."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(inplanes, planes, 2 if (i > 0 and j == 0) else 1))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        _conv_bn_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans)


def resnet34(num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans)


def resnet50(num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans)


def _conv_bn_relu6(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Convolution, batch norm, ReLU6: torchvision's Conv2dNormActivation (children 0, 1, 2)."""
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6())


class InvertedResidual(nn.Module):
    """Sandler et al. 2018: 1x1 expansion (t > 1), 3x3 depthwise, 1x1 linear projection; residual when the
    stride is 1 and the widths match."""

    def __init__(self, inp: int, out: int, stride: int, t: int):
        super().__init__()
        hidden = inp * t
        layers = [_conv_bn_relu6(inp, hidden, 1)] if t != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and inp == out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Sandler et al. 2018, Table 2, width multiplier 1."""
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        features: list[nn.Module] = [_conv_bn_relu6(in_chans, 32, 3, 2)]
        inp = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(_conv_bn_relu6(inp, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        _conv_bn_init(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def mobilenet_v2(num_classes: int = 1000, in_chans: int = 3) -> MobileNetV2:
    return MobileNetV2(num_classes, in_chans)


VGG_CONFIGS = {"vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
               "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")}


class VGG(nn.Module):
    """Simonyan and Zisserman 2015, Table 1 (A: vgg11, D: vgg16), no batch normalisation."""

    def __init__(self, config: tuple, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        inp = in_chans
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(inp, v, 3, padding=1), nn.ReLU()]
                inp = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, num_classes))
        _conv_bn_init(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def vgg11(num_classes: int = 1000, in_chans: int = 3) -> VGG:
    return VGG(VGG_CONFIGS["vgg11"], num_classes, in_chans)


def vgg16(num_classes: int = 1000, in_chans: int = 3) -> VGG:
    return VGG(VGG_CONFIGS["vgg16"], num_classes, in_chans)
