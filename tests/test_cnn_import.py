"""CNN import from PyTorch: NCHW modules to the channels-last IR, checked against torch on digits images.

The float reference (numpy float64) is compared with torch run in float64 (tolerance 1e-12: only the
order of the sums differs) and in float32 (tolerance 1e-5: torch's own float32 rounding).
"""

import numpy as np
import pytest
import torch
from torch import nn

import codesign
from codesign.core.fixed import FixedType
from codesign.errors import UnsupportedLayerError


class Digits2D(nn.Module):
    """A functional forward: conv (same) -> BN -> relu -> maxpool -> conv -> relu -> avgpool -> flatten -> linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 6, 3, padding="same")
        self.fc = nn.Linear(6 * 2 * 2, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.c1(x))), 2)
        x = nn.functional.avg_pool2d(torch.relu(self.c2(x)), 2)
        return self.fc(torch.flatten(x, 1))


CASES = {
    "conv_bn_pools_flatten": (Digits2D, (1, 8, 8)),
    "strided_symmetric_same": (lambda: nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(),
                                                     nn.MaxPool2d(3, stride=1), nn.Flatten(), nn.Linear(27, 10)),
                               (1, 9, 9)),
    "even_kernel_same_then_global": (lambda: nn.Sequential(nn.Conv2d(1, 5, 2, padding="same"), nn.BatchNorm2d(5),
                                                           nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                                           nn.Linear(5, 10)), (1, 8, 8)),
    "conv1d_rows": (lambda: nn.Sequential(nn.Conv1d(8, 6, 3), nn.ReLU(), nn.AvgPool1d(2, stride=1),
                                          nn.MaxPool1d(2), nn.Flatten(), nn.Linear(6 * 2, 10)), (8, 8)),
    "conv1d_adaptive_to_windows": (lambda: nn.Sequential(nn.Conv1d(8, 4, 1), nn.AdaptiveAvgPool1d(2), nn.Flatten(),
                                                         nn.Linear(8, 10)), (8, 8)),
}


def _randomize(model: nn.Module) -> nn.Module:
    for mod in model.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            mod.running_mean.normal_(0, 0.3)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.normal_(1, 0.3)
            mod.bias.data.normal_(0, 0.3)
    return model.eval()


def _images(digits, shape) -> np.ndarray:
    """The digits test images in torch's (N, C, ...) order: (N, 1, 8, 8) (zero-padded at the end to a larger
    ``shape``), or the 8 rows as 8 channels for 1-D."""
    x = digits.X_test.reshape(-1, 8, 8)
    if len(shape) == 2:
        return x
    return np.pad(x, ((0, 0), (0, shape[1] - 8), (0, shape[2] - 8)))[:, None]


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_cnn_matches_torch_on_digits_images(case, digits):
    torch.manual_seed(sum(map(ord, case)))
    make, shape = CASES[case]
    model = _randomize(make())
    net = codesign.load(model, input_shape=shape)
    assert net.input_shape == (*shape[1:], shape[0])
    x = _images(digits, shape)
    got = net.forward(np.moveaxis(x, 1, -1))
    with torch.no_grad():
        want32 = model(torch.from_numpy(x).float()).numpy()
        want64 = model.double()(torch.from_numpy(x)).numpy()
    err64, err32 = np.abs(got - want64).max(), np.abs(got - want32).max()
    print(f"{case}: {len(x)} digits images, max |ref - torch64| = {err64:.1e}, |ref - torch32| = {err32:.1e}")
    assert err64 < 1e-12 and err32 < 1e-5


def test_layers_are_channels_last_with_batchnorm_kept_until_folded():
    net = codesign.load(_randomize(Digits2D()), input_shape=(1, 8, 8))
    assert [l.kind for l in net.layers] == ["Conv2D", "BatchNorm", "ReLU", "MaxPool2D", "Conv2D", "ReLU", "AvgPool2D",
                                            "Flatten", "Dense", "Output"]
    assert net.layers[0].weight.shape == (3, 3, 1, 4) and net.layers[0].padding == "same"
    assert net.shapes()[6] == (2, 2, 6)


_BAD = {
    "depthwise": (nn.Conv2d(2, 2, 3, groups=2), (2, 8, 8),
                  r"module '0' \(Conv2d\): dilation \(1, 1\), groups 2: only dilation 1 and groups 1 \(no depthwise or "
                  r"grouped convolution\) are supported; supported: Linear, Conv1d"),
    "dilation": (nn.Conv2d(1, 2, 3, dilation=2), (1, 8, 8), r"module '0' \(Conv2d\): dilation \(2, 2\), groups 1"),
    "padding_not_same": (nn.Conv2d(1, 2, 3, stride=2, padding=1), (1, 8, 8),
                         r"module '0' \(Conv2d\): padding \[1, 1\] with kernel \(3, 3\) and stride \(2, 2\) on a "
                         r"\(8, 8\) input is not TensorFlow's 'same'"),
    "avgpool_3x3": (nn.AvgPool2d(3), (1, 9, 9),
                    r"module '0' \(AvgPool2d\): AvgPool2D averages a 3x3 window \(9 values\); only a power-of-two"),
    "global_36": (nn.AdaptiveAvgPool2d(1), (1, 6, 6), r"module '0' \(AdaptiveAvgPool2d\): GlobalAvgPool2D averages "
                                                      r"6x6 = 36 positions; only a power-of-two count"),
    "ceil_mode": (nn.MaxPool2d(3, ceil_mode=True), (1, 8, 8),
                  r"module '0' \(MaxPool2d\): ceil_mode gives a partial window"),
    "pool_padding": (nn.MaxPool2d(2, padding=1), (1, 8, 8), r"module '0' \(MaxPool2d\): pooling with padding \(1, 1\)"),
    "upsampling": (nn.Upsample(scale_factor=2), (1, 8, 8),
                   r"module '0' \(Upsample\): unsupported operation 'upsample_nearest2d'; supported: Linear"),
    "transposed": (nn.ConvTranspose2d(1, 2, 3), (1, 8, 8), r"module '0' \(ConvTranspose2d\): unsupported operation"),
}


@pytest.mark.parametrize("case", sorted(_BAD))
def test_unsupported_cnn_parts_are_refused_naming_the_module(case):
    mod, shape, pattern = _BAD[case]
    with pytest.raises(UnsupportedLayerError, match="^" + pattern):
        codesign.load(nn.Sequential(mod), input_shape=shape)


# ---- ONNX / QONNX: average and global pooling ------------------------------------------------------
def _qonnx_cnn(rng, global_pool: bool):
    """Channels-first (N, 1, 8, 8): Conv 'same', ReLU to 4 bits, 2x2 average pooling (then a Quant that
    rounds the mean), Conv, and global average pooling or a Flatten, then Gemm."""
    from tests.qonnx_graphs import Graph

    g = Graph((1, 8, 8)).act_quant("in_q", 2**-4, 6)
    g.conv(rng.normal(0, 0.5, (4, 1, 3, 3)), "conv1", 2**-3, 5, rng.normal(0, 1, 4), 2**-7, pads=[1, 1, 1, 1])
    g.data("Relu", "relu1").act_quant("q1", 2**-2, 4, signed=0)
    g.data("AveragePool", "avg", kernel_shape=[2, 2], strides=[2, 2]).act_quant("q2", 2**-3, 6, signed=0)
    g.conv(rng.normal(0, 0.5, (4, 4, 3, 3)), "conv2", 2**-3, 5, rng.normal(0, 1, 4), 2**-7)
    if global_pool:
        g.data("GlobalAveragePool", "gap").data("Flatten", "flat", axis=1)
        n = 4
    else:
        g.data("AveragePool", "avg2", kernel_shape=[2, 1], strides=[1, 1]).data("Flatten", "flat", axis=1)
        n = 4 * 1 * 2
    g.dense(rng.normal(0, 0.3, (n, 3)), "fc1", w_scale=2**-4, w_bits=6, bias=rng.normal(0, 1, 3), b_scale=2**-6)
    return g


@pytest.mark.parametrize("global_pool", [True, False], ids=["global", "windows"])
def test_qonnx_average_pooling_imports_to_what_qonnx_executes(global_pool, rng):
    pytest.importorskip("qonnx")
    from codesign.importers.onnx_import import network_from_onnx
    from tests.qonnx_graphs import run_qonnx

    g = _qonnx_cnn(rng, global_pool)
    net = network_from_onnx(g.model())
    pools = ["GlobalAvgPool2D"] if global_pool else ["AvgPool2D", "Flatten"]
    assert [l.kind for l in net.layers] == ["Conv2D", "ReLU", "AvgPool2D", "Conv2D", *pools, "Dense", "Output"]
    assert net.layer("avg").result_type == FixedType(6, 3, False, "RND_CONV", "SAT")  # the Quant after the mean
    x = (rng.normal(0, 3, (2000, 1, 8, 8)) * rng.choice([0.1, 1, 4], (2000, 1, 1, 1))).astype(np.float32)
    assert np.array_equal(net.forward(np.moveaxis(x, 1, -1).astype(np.float64)), run_qonnx(g.model(), x))
