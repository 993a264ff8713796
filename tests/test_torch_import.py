"""PyTorch import: live modules, .pt2 exports (safe) and pickled .pt modules (trusted only)."""

import collections

import numpy as np
import pytest
import torch
from torch import nn

import codesign
from codesign.errors import ModelFileError, UnsupportedLayerError


class PlainForward(nn.Module):
    """Not a Sequential: a feed-forward ``forward`` with functional calls."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(10, 7)
        self.drop = nn.Dropout(0.3)
        self.b = nn.Linear(7, 3)

    def forward(self, x):
        return self.b(self.drop(torch.relu(self.a(x))))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 3, 3, stride=2)
        self.fc = nn.Linear(27, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.c1(x)))
        return self.fc(torch.flatten(self.c2(x), 1))


def _randomize_bn(m):
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.normal_()
    return m.eval()


CASES = {
    "sequential_bn1d": (lambda: nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Identity(),
                                              nn.Linear(8, 4)), (16,)),
    "plain_forward": (PlainForward, (10,)),
    "conv2d_bn_flatten": (ConvNet, (2, 8, 8)),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 2)), (3, 8)),
}


def _to_ir_layout(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 2 else np.moveaxis(x, 1, -1)


@pytest.mark.parametrize("case", sorted(CASES))
def test_imported_network_matches_torch_forward(case, rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    make, shape = CASES[case]
    model = _randomize_bn(make())
    net = codesign.load(model, input_shape=shape if len(shape) > 1 else None)
    x = rng.normal(size=(32, *shape)).astype(np.float32)
    want = model(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(net.forward(_to_ir_layout(x)), want, atol=1e-5)


def test_batchnorm_is_kept_until_folded():
    model = _randomize_bn(CASES["sequential_bn1d"][0]())
    net = codesign.load(model)
    assert [l.kind for l in net.layers] == ["Dense", "BatchNorm", "ReLU", "Dense", "Output"]


def test_pt2_export_loads_safely(tmp_path, rng):
    model = PlainForward().eval()
    ep = torch.export.export(model, (torch.zeros(2, 10),))
    torch.export.save(ep, tmp_path / "m.pt2")
    net = codesign.load(tmp_path / "m.pt2")
    x = rng.normal(size=(8, 10)).astype(np.float32)
    assert np.allclose(net.forward(x), model(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_pickled_module_needs_the_trust_flag(tmp_path):
    model = nn.Sequential(collections.OrderedDict(fc=nn.Linear(4, 2)))
    torch.save(model, tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match=r"runs arbitrary code when loaded; pass trust=True \(CLI: --trust-pickle\)"):
        codesign.load(tmp_path / "m.pt")
    assert codesign.load(tmp_path / "m.pt", trust=True).layers[0].weight.shape == (4, 2)


def test_a_state_dict_is_not_a_model(tmp_path):
    torch.save(nn.Linear(4, 2).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ModelFileError, match=r"holds a OrderedDict, not an nn.Module"):
        codesign.load(tmp_path / "sd.pt", trust=True)


def test_unsupported_layer_is_named_with_its_type_and_the_supported_list():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=r"module '1' \(Sigmoid\): unsupported operation 'sigmoid'; supported: Linear"):
        codesign.load(model)


def test_a_file_that_is_not_a_model(tmp_path):
    p = tmp_path / "bad.pt2"
    p.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match=r"bad.pt2: not a readable torch.export archive"):
        codesign.load(p)
