"""Compression of networks with branches: the QAT model follows the graph, bit for bit with its export."""

import numpy as np
import pytest
import torch
from torch import nn

import codesign
from codesign.compress.qat import Precision
from codesign.compress.qcnn import assign_types, consumers, network_from_qcnn, qcnn_from_network
from codesign.compress.quantize import fold_batchnorm, quantize_network
from codesign.core.fixed import FixedType
from codesign.core.layers import Add, BatchNorm, Concatenate, Conv2D, Dense, ReLU
from codesign.core.network import INPUT, Network
from codesign.errors import ConfigError

IN_T = FixedType(5, 1, signed=False)


class TinyResNet(nn.Module):
    """conv-bn-relu, a block with an identity shortcut, a block with a 1x1 projection, global pool, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
        self.a1, self.a2 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.b1, self.b2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.proj = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.a2(torch.relu(self.a1(x))) + x)
        x = torch.relu(self.b2(torch.relu(self.b1(x))) + self.proj(x))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = TinyResNet().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return codesign.load(model, input_shape=(2, 4, 4))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 17, (300, 4, 4, 2)) / 16.0


def test_batchnorm_after_a_conv_folds_into_it_in_a_graph(resnet, images):
    folded = fold_batchnorm(resnet)
    assert not any(isinstance(l, BatchNorm) for l in folded.layers)
    assert [l.inputs for l in folded.layers if isinstance(l, Add)] == [("a2", "stem_2"), ("b2", "proj_0")]
    np.testing.assert_allclose(folded.forward(images), resnet.forward(images), atol=1e-12)


def test_a_batchnorm_whose_conv_feeds_another_layer_is_not_folded():
    rng = np.random.default_rng(2)
    layers = [Dense("d", rng.normal(size=(4, 3))), BatchNorm("bn", np.ones(3), np.zeros(3), np.ones(3), np.ones(3)),
              Add("add", inputs=("bn", "d"))]
    assert [l.kind for l in fold_batchnorm(Network("n", (4,), layers)).layers] == ["Dense", "BatchNorm", "Add"]


def test_the_qat_model_follows_the_graph_in_float(resnet, images):
    model = qcnn_from_network(resnet)
    with torch.no_grad():
        out = model(torch.tensor(images)).numpy()
    np.testing.assert_allclose(out, resnet.forward(images), atol=1e-12)


def test_the_quantized_graph_export_equals_the_qat_model_bit_for_bit(resnet, images):
    model = qcnn_from_network(resnet)
    assign_types(model, Precision(5, 7, 10, IN_T), images)
    net = network_from_qcnn(model, "q", {})
    assert not net.is_chain and sum(isinstance(l, Add) for l in net.layers) == 2
    with torch.no_grad():
        qat = model(torch.tensor(images)).numpy()
    assert np.array_equal(qat, net.forward(images))


def test_post_training_quantization_keeps_the_graph(resnet, images):
    q = quantize_network(resnet, IN_T, 8, result_bits=16, calib=images)
    assert [l.inputs for l in q.layers if isinstance(l, Add)] == [("a2", "stem_2"), ("b2", "proj_0")]
    assert np.array_equal(np.argmax(q.forward(images), -1), np.argmax(resnet.forward(images), -1))


def test_a_concatenation_trains_and_exports_exactly(images):
    rng = np.random.default_rng(3)
    layers = [Conv2D("c1", rng.normal(size=(3, 3, 2, 3)), padding="same"), ReLU("r1"),
              Conv2D("c2", rng.normal(size=(1, 1, 2, 2)), inputs=(INPUT,)),
              Concatenate("cat", inputs=("r1", "c2")), ReLU("r2"),
              codesign.core.layers.Flatten("f"), Dense("fc", rng.normal(size=(80, 4)))]
    net = Network("cat", (4, 4, 2), layers)
    model = qcnn_from_network(net)
    assign_types(model, Precision(6, 8, 10, IN_T), images)
    q = network_from_qcnn(model, "q", {})
    with torch.no_grad():
        assert np.array_equal(model(torch.tensor(images)).numpy(), q.forward(images))


def test_channel_pruning_of_a_graph_is_refused_with_what_works(resnet):
    with pytest.raises(ConfigError, match=r"channel \(structured\) pruning of a network with branches or merges is not "
                                          r"built yet; use --method hardware"):
        consumers(qcnn_from_network(resnet))


@pytest.mark.parametrize("padding, folds", [("valid", True), ("same", False)])
def test_a_batchnorm_on_the_input_folds_forward_only_into_an_unpadded_conv(padding, folds, images):
    rng = np.random.default_rng(4)
    bn = BatchNorm("bn", rng.uniform(0.5, 2, 2), rng.normal(size=2), rng.normal(size=2), rng.uniform(0.5, 2, 2))
    conv = Conv2D("c", rng.normal(size=(3, 3, 2, 3)), rng.normal(size=3), strides=(2, 2) if padding == "valid" else (1, 1),
                  padding=padding)
    net = Network("bn_first", (4, 4, 2), [bn, conv])
    folded = fold_batchnorm(net)
    assert any(isinstance(l, BatchNorm) for l in folded.layers) != folds
    np.testing.assert_allclose(folded.forward(images), net.forward(images), atol=1e-12)


def test_a_batchnorm_before_a_dense_folds_into_it(images):
    rng = np.random.default_rng(5)
    net = Network("bn_dense", (6,), [BatchNorm("bn", rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6),
                                               rng.uniform(0.5, 2, 6)), Dense("d", rng.normal(size=(6, 3)))])
    x = rng.normal(size=(20, 6))
    folded = fold_batchnorm(net)
    assert [l.kind for l in folded.layers] == ["Dense"]
    np.testing.assert_allclose(folded.forward(x), net.forward(x), atol=1e-12)
