"""Compression of networks with branches: the QAT model follows the graph, bit for bit with its export."""

import numpy as np
import pytest
import torch
from torch import nn

import codesign
from codesign.compress.qat import Precision
from codesign.compress.channels import remove_unit
from codesign.compress.qcnn import assign_types, consumers, network_from_qcnn, qcnn_from_network, unit_groups
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


def test_channels_tied_by_an_add_form_one_prunable_group(resnet):
    groups = unit_groups(qcnn_from_network(resnet))
    # weighted stages: stem 0, a1 1, a2 2, b1 3, b2 4, proj 5, fc 6 (its outputs are the network's: never pruned)
    assert groups[(0, 1)].producers == [(0, 1), (2, 1)]  # the identity shortcut ties stem and a2
    assert groups[(4, 2)].producers == [(4, 2), (5, 2)]  # the projection ties b2 and proj
    assert sorted(k for k, _ in groups[(0, 1)].readers) == [1, 3, 5]  # a1 reads the stem; b1 and proj the sum
    assert (1, 0) in groups and not any(k == 6 for k, _ in groups)


def test_removing_a_tied_group_silences_the_channel_through_the_add(resnet, images):
    model = qcnn_from_network(resnet)
    remove_unit(model, 0, 1)
    with torch.no_grad():
        outs = model.trace(torch.tensor(images))
    add1 = [i for i, s in enumerate(model.stages) if getattr(s, "kind", "") == "Add"][0]
    assert torch.all(outs[add1][..., 1] == 0)
    assert all(float(s.mask[..., 1, :].sum()) == 0 for s in (model.weighted()[1], model.weighted()[3],
                                                              model.weighted()[5]))


def test_the_chain_consumers_refuse_a_graph(resnet):
    with pytest.raises(ConfigError, match=r"channel \(structured\) pruning of a network with branches"):
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


def test_channel_scores_rank_each_tied_group_once_and_pruning_lowers_the_cost(resnet, images):
    from codesign.board import load_board
    from codesign.compress.channels import channel_scores, prune_channels
    from codesign.compress.cost import network_cost, total_cost

    board = load_board("pynq-z2")
    model = qcnn_from_network(resnet)
    assign_types(model, Precision(5, 7, 10, IN_T), images)
    y = np.arange(len(images)) % 5
    ranked = channel_scores(model, images, y, "classification", board, "lut")
    assert sorted((k, j) for _, k, j in ranked) == sorted(unit_groups(model))
    before = total_cost(network_cost(network_from_qcnn(model, "q", {}), board, "lut"))["lut"]
    assert prune_channels(model, ranked, 3) == 3
    assert total_cost(network_cost(network_from_qcnn(model, "q", {}), board, "lut"))["lut"] < before
