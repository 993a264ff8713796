"""QONNX export: re-import gives the same network, qonnx's executor gives the reference's outputs exactly."""

from dataclasses import replace

import numpy as np
import pytest

import codesign
from codesign.core import fixed
from codesign.app.cli import main
from codesign.core.fixed import FixedType
from codesign.core.network import Network
from codesign.core.verify import verification_inputs
from tests.conftest import MODELS
from tests.qonnx_graphs import run_qonnx
from tests.test_cli import assert_one_line_error

NETWORKS = ["digits_q", "qkeras_net"]


def assert_same_network(a: Network, b: Network) -> None:
    """Same layers, names, types and integers; the mask of a re-imported network is its nonzero weights."""
    da, arrays_a = a.to_json()
    db, arrays_b = b.to_json()
    strip = lambda d: [{k: v for k, v in l.items() if k != "mask"} for l in d["layers"]]  # noqa: E731
    assert (da["name"], da["input_shape"], da["input_type"], strip(da)) == (
        db["name"], db["input_shape"], db["input_type"], strip(db))
    for key, arr in arrays_a.items():
        if key.endswith("/mask"):
            assert np.array_equal(arrays_b[key], arrays_a[key.replace("/mask", "/weight")] != 0), key
        else:
            assert np.array_equal(arr, arrays_b[key]) and arr.dtype == arrays_b[key].dtype, key


def inputs_of(net: Network, n: int) -> np.ndarray:
    """Corner and random values of the input type, as floats."""
    return fixed.to_float(verification_inputs(net, None, n), net.input_type)


@pytest.fixture(scope="module", params=NETWORKS)
def exported(request, tmp_path_factory):
    net = request.getfixturevalue(request.param)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    net.to_onnx(path)
    return net, path


def test_export_then_import_is_the_same_network(exported):
    net, path = exported
    assert_same_network(net, codesign.load(path))


def test_qonnx_executes_the_export_exactly_as_the_reference(exported):
    net, path = exported
    x = inputs_of(net, 2000)
    assert np.array_equal(run_qonnx(path, x, before_head=True), net.forward(x))


@pytest.mark.parametrize("name, double_layers", [("digits_q", {"fc2", "fc3"}), ("qkeras_net", set())])
def test_only_accumulators_wider_than_float32_compute_in_float64(name, double_layers, request):
    net = request.getfixturevalue(name)
    casts = {n.name.split(".")[0] for n in net.to_onnx().graph.node if n.op_type == "Cast"}
    assert casts == double_layers
    assert not any(n.op_type == "Cast" for n in net.to_onnx(float64=False).graph.node)


def test_pruned_weights_are_exported_as_zeros(digits_q, tmp_path):
    from onnx import numpy_helper

    model = digits_q.to_onnx()
    w = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}["fc1.weight"]
    assert np.array_equal(w != 0, digits_q.layer("fc1").weight != 0)


def test_a_quantized_conv_network_round_trips():
    """hls4ml's Conv1D example at 6-bit inputs, 4-bit weights and 10-bit results: every sum fits float32."""
    from codesign.compress.quantize import quantize_network

    fnet = codesign.load(MODELS / "onnx" / "conv1d_small_keras.onnx")
    calib = np.random.default_rng(0).normal(0, 1, (200, *fnet.input_shape))
    net = quantize_network(fnet, FixedType(6, 3, True, "RND_CONV", "SAT"), 4, result_bits=10, calib=calib)
    assert max(reference_accum_widths(net)) <= 24
    back = network_roundtrip(net)
    assert_same_network(net, back)
    x = inputs_of(net, 500)
    assert np.array_equal(run_qonnx(net.to_onnx(), x, before_head=True), net.forward(x))


def test_a_qonnx_cnn_with_max_pooling_round_trips(rng):
    from tests.test_onnx_import import _cnn

    net = network_roundtrip_from(_cnn(rng).model())
    assert_same_network(net, network_roundtrip(net))
    x = inputs_of(net, 500)
    assert np.array_equal(run_qonnx(net.to_onnx(), x, before_head=True), net.forward(x))


def network_roundtrip_from(model) -> Network:
    from codesign.importers.onnx_import import network_from_onnx

    return network_from_onnx(model, name="cnn")


def reference_accum_widths(net: Network) -> list[int]:
    from codesign.core.reference import exact_accum_type

    t, out = net.input_type, []
    for layer, t_out in zip(net.layers, net.tensor_types()):
        if hasattr(layer, "weight_type"):
            out.append(exact_accum_type(layer, t).width)
        t = t_out
    return out


def network_roundtrip(net: Network) -> Network:
    from codesign.importers.onnx_import import network_from_onnx

    return network_from_onnx(net.to_onnx(), name=net.name)


def test_codesign_export_writes_qonnx_from_a_directory(digits_q, tmp_path, capsys):
    digits_q.save(tmp_path / "run")
    code = main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "digits.onnx"), "--json"])
    assert code == 0, capsys.readouterr().err
    assert_same_network(digits_q, codesign.load(tmp_path / "digits.onnx"))


@pytest.mark.parametrize("result_type, pattern", [
    (FixedType(8, 2, True, "RND_CONV", "WRAP"), r"layer 'fc1': ap_fixed<8,2,AP_RND_CONV,AP_WRAP> wraps on overflow.*use AP_SAT"),
    (FixedType(8, 4, True, "RND", "SAT"), r"layer 'fc1': ap_fixed<8,4,AP_RND,AP_SAT> rounds half up on values that "
                                           r"can be negative.*use AP_RND_CONV or AP_TRN"),
])
def test_a_type_qonnx_cannot_express_is_one_line_and_exit_2(result_type, pattern, digits_q, tmp_path, capsys):
    layers = [replace(l, result_type=result_type) if l.name == "fc1" else l for l in digits_q.layers]
    Network(digits_q.name, digits_q.input_shape, layers, digits_q.input_type).save(tmp_path / "run")
    code = main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "x.onnx")])
    assert_one_line_error(code, capsys.readouterr().err, pattern)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_hls4ml_reads_the_exported_jet_tagger(qkeras_net, tmp_path):
    """hls4ml 1.3's QONNX front end, after qonnx's clean-up passes, builds and runs the export."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    from tests.conftest import jet_inputs

    m = cleanup_model(ModelWrapper(qkeras_net.to_onnx(tmp_path / "jet.onnx")))
    m = cleanup_model(m.transform(ConvertToChannelsLastAndClean()).transform(GemmToMatMul()))
    cfg = hls4ml.utils.config.config_from_onnx_model(m, granularity="name", backend="Vitis",
                                                     default_precision="fixed<32,16>")
    hm = hls4ml.converters.convert_from_onnx_model(m, output_dir=str(tmp_path / "hls"), io_type="io_parallel",
                                                   backend="Vitis", hls_config=cfg)
    hm.compile()
    x = jet_inputs(qkeras_net, 2000, 0)
    y = hm.predict(np.ascontiguousarray(x.astype(np.float32)))
    assert np.mean(y.argmax(-1) == qkeras_net.forward(x).argmax(-1)) > 0.95
