"""Residual networks from PyTorch: a ResNet written the usual way imports as a graph and matches torch."""

import numpy as np
import pytest
import torch
from torch import nn

import codesign
from codesign.core.layers import Add, BatchNorm, Concatenate
from codesign.errors import UnsupportedLayerError


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, shrunk: conv-bn-relu-conv-bn, plus the shortcut (identity or 1x1 conv + bn)."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None if c_in == c_out else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False),
                                                                   nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.l1 = BasicBlock(4, 4)
        self.pool = nn.MaxPool2d(2)
        self.l2 = BasicBlock(4, 6)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.l2(self.pool(self.l1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Inception(nn.Module):
    """Two branches joined on channels."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x):
        y = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1)
        return self.fc(torch.flatten(y, 1))


def _randomized(m):
    torch.manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.normal_()
            mod.bias.data.normal_()
    return m.eval().double()


def _images(n, shape=(1, 8, 8), seed=0):
    return np.random.default_rng(seed).random((n, *shape))


def _matches_torch(net, model, x_torch_layout):
    want = model(torch.from_numpy(x_torch_layout)).detach().numpy()
    got = net.forward(np.moveaxis(x_torch_layout, 1, -1))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_resnet_imports_as_a_graph_with_its_residual_adds():
    net = codesign.load(_randomized(ResNet()).float(), input_shape=(1, 8, 8))
    adds = [l for l in net.layers if isinstance(l, Add)]
    assert len(adds) == 2 and not net.is_chain
    assert sum(isinstance(l, BatchNorm) for l in net.layers) == 6
    shortcut_bn = net.layers[[l.name for l in net.layers].index(adds[1].inputs[1])]
    assert isinstance(shortcut_bn, BatchNorm) and shortcut_bn.name.startswith("l2_downsample")


@pytest.mark.parametrize("form", ["pt2", "pickle"])
def test_saved_resnet_matches_torch_in_float64(form, tmp_path):
    model = _randomized(ResNet())
    if form == "pt2":
        path = tmp_path / "resnet.pt2"
        torch.export.save(torch.export.export(model.float(), (torch.zeros(2, 1, 8, 8),)), str(path))
        net = codesign.load(path)
    else:
        path = tmp_path / "resnet.pt"
        torch.save(model.float(), str(path))
        net = codesign.load(path, trust=True, input_shape=(1, 8, 8))
    _matches_torch(net, model.double(), _images(200))


def test_concatenated_branches_match_torch():
    model = _randomized(Inception())
    net = codesign.load(model.float(), input_shape=(2, 4, 4))
    assert any(isinstance(l, Concatenate) for l in net.layers)
    _matches_torch(net, model.double(), _images(50, (2, 4, 4)))


class ScaledAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x):
        return self.a(x) + 2 * x


def test_a_sum_with_a_scaled_operand_is_refused_naming_it():
    with pytest.raises(UnsupportedLayerError, match=r"operation 'mul'|unsupported operation 'mul'"):
        codesign.load(ScaledAdd(), input_shape=(4,))
