"""Brevitas -> QONNX -> fpga-codesign: the imported reference equals Brevitas's quantized forward bit for bit."""

import json
import warnings

import numpy as np
import pytest

import codesign
from codesign.app.cli import main

# (weight bits, activation bits after the layer): 2 to 8 bits on both sides
BITS = [(3, 2), (8, 5), (2, None)]


def brevitas_mlp():
    """64-32-16-10 on digits: 8-bit input, per-channel 3-bit weights, 2- and 5-bit ReLUs, 8- and 2-bit weights."""
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int16Bias
    from brevitas.quant import Uint8ActPerTensorFixedPoint
    from brevitas.quant.fixed_point import Int8WeightPerChannelFixedPoint

    layers = [qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=8, return_quant_tensor=True)]
    sizes = [64, 32, 16, 10]
    for i, (w_bits, a_bits) in enumerate(BITS):
        wq = Int8WeightPerChannelFixedPoint if i == 0 else Int8WeightPerTensorFixedPoint
        layers.append(qnn.QuantLinear(sizes[i], sizes[i + 1], bias=True, weight_quant=wq, weight_bit_width=w_bits,
                                      bias_quant=Int16Bias, return_quant_tensor=a_bits is not None))
        if a_bits is not None:
            layers.append(qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=a_bits,
                                        return_quant_tensor=True))
    return torch.nn.Sequential(*layers)


@pytest.fixture(scope="module")
def brevitas_model(digits, tmp_path_factory):
    """Trained for a few full-batch steps, exported with Brevitas's own QONNX export."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brevitas.export import export_qonnx

        torch.manual_seed(0)
        model = brevitas_mlp()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        X, y = torch.tensor(digits.X_train, dtype=torch.float32), torch.tensor(digits.y_train)
        for _ in range(40):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X), y).backward()
            opt.step()
        model.eval()
        path = tmp_path_factory.mktemp("brevitas") / "brevitas_mlp.onnx"
        export_qonnx(model, torch.zeros(1, 64), export_path=str(path))
    return model, path


def test_brevitas_qonnx_import_equals_brevitas_forward_bit_for_bit(brevitas_model, digits, rng):
    import torch

    model, path = brevitas_model
    net = codesign.load(path)
    x = np.concatenate([digits.X_train, digits.X_test, rng.uniform(-0.5, 1.5, (1000, 64))]).astype(np.float32)
    assert len(x) >= 2000
    with torch.no_grad():
        theirs = model(torch.tensor(x)).numpy().astype(np.float64)
    ours = net.forward(x.astype(np.float64))
    assert np.array_equal(ours, theirs), f"{np.sum(ours != theirs)} of {ours.size} outputs differ"
    assert np.mean(ours[: len(digits.X_train)].argmax(-1) == digits.y_train) > 0.5  # it learned (chance is 0.1)


def test_brevitas_quantizers_become_the_layer_types(brevitas_model):
    net = codesign.load(brevitas_model[1])
    assert net.input_type.width == 8 and net.input_type.signed and net.input_type.overflow == "SAT"
    dense = net.weighted_layers()
    assert dense[1].weight_type.width == 8 and dense[2].weight_type.width == 2
    assert dense[0].weight_type.width >= 3  # per-channel scales: 3 bits at the finest, the coarsest's top
    relus = [l for l in net.layers if l.kind == "ReLU"]
    assert [r.result_type.width for r in relus] == [2, 5] and not any(r.result_type.signed for r in relus)
    assert all(r.result_type.quant == "RND_CONV" for r in relus)


def test_brevitas_export_re_exports_to_the_same_network(brevitas_model, tmp_path):
    from tests.test_onnx_export import assert_same_network

    net = codesign.load(brevitas_model[1])
    net.to_onnx(tmp_path / "again.onnx")
    assert_same_network(net, codesign.load(tmp_path / "again.onnx"))


@pytest.mark.slow
def test_a_brevitas_model_runs_the_flow_bit_exact(brevitas_model, tmp_path):
    out = tmp_path / "run"
    code = main(["flow", str(brevitas_model[1]), "--data", "digits", "--board", "pynq-z2", "--out", str(out),
                 "--no-synth", "--samples", "2000", "--quiet"])
    rep = json.loads((out / "report.json").read_text())
    assert code == 0
    assert rep["precision"] == "as imported (already fixed point)"
    assert rep["hls"]["csim_bit_exact"] is True and rep["cosim"]["bit_exact"] is True
    assert rep["accuracy"]["compressed"] > 0.5
