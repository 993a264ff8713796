"""hls4ml projects for CNNs (io_stream, line buffers): C simulation bit-exact against the reference.

The networks are built in the IR with integer weights of their fixed-point types, with result types that
round and saturate, so the verification vectors (corners of the input type first) reach the saturation
corners. The default suite builds ONE tiny CNN per backend (a session-scoped project each); the other
layer forms, precisions and hls4ml's float Conv2D example are ``slow``.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from codesign.board import load_board
from codesign.core.fixed import FixedType
from codesign.core.layers import (AvgPool1D, AvgPool2D, Conv1D, Conv2D, Dense, Flatten, GlobalAvgPool1D,
                                  GlobalAvgPool2D, MaxPool1D, MaxPool2D, ReLU)
from codesign.core.network import Network
from codesign.core.verify import verification_inputs
from codesign.errors import BackendError
from hls.csim import csim_check
from hls.project import write_project
from tests.conftest import MODELS

BOARDS = {"vitis": "zcu102", "vivado": "zcu102", "quartus": "arria10-gx1150", "oneapi": "agilex7-f014"}
T = FixedType
# (weights, biases, conv result, dense result, input): a rounding, saturating 6-bit set and a 4-bit one whose
# results wrap and whose ReLU casts to an unsigned type
PRECISIONS = {
    "w6-sat": (T(6, 1), T(8, 2), T(8, 2, True, "RND_CONV", "SAT"), T(8, 3, True, "RND", "SAT"), T(8, 1)),
    "w4-wrap": (T(4, 1), T(6, 2), T(7, 3, True, "TRN", "WRAP"), T(9, 4, True, "RND_CONV", "WRAP"), T(6, 0, False)),
}


def _ints(rng: np.random.Generator, t: FixedType, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(t.min_int, t.max_int + 1, size=shape)


def cnn(kind: str, precision: str = "w6-sat", seed: int = 0) -> Network:
    """A small quantized CNN of one of the shapes below, random integer weights of its types."""
    wt, bt, ct, dt, it = PRECISIONS[precision]
    rng = np.random.default_rng(seed)

    def conv(cls, name, k, c_in, c_out, **kw):
        return cls(name, weight=_ints(rng, wt, (*k, c_in, c_out)), bias=_ints(rng, bt, (c_out,)), weight_type=wt,
                   bias_type=bt, **kw)

    relu_t = T(ct.width - 1, ct.integer - 1, False, "RND", "SAT") if precision == "w4-wrap" else None
    if kind == "tiny":  # 6x6x1 -> conv 3x3 x2 -> ReLU -> max-pool 2x2 -> flatten -> dense 3
        shape = (6, 6, 1)
        layers = [conv(Conv2D, "conv1", (3, 3), 1, 2, result_type=ct), ReLU("relu1", result_type=relu_t),
                  MaxPool2D("pool1", pool=(2, 2)), Flatten("flatten")]
    elif kind == "same-strided":  # 'same' padding, asymmetric at stride 2, then a second conv and pooling
        shape = (7, 6, 2)
        layers = [conv(Conv2D, "conv1", (3, 3), 2, 3, padding="same", strides=(2, 2), result_type=ct),
                  ReLU("relu1", result_type=relu_t), conv(Conv2D, "conv2", (2, 2), 3, 4, padding="same", result_type=ct),
                  MaxPool2D("pool1", pool=(2, 1)), Flatten("flatten")]
    elif kind == "avg2d":  # average pooling with a rounding cast, global average pooling
        shape = (8, 8, 2)
        layers = [conv(Conv2D, "conv1", (3, 3), 2, 3, padding="same", result_type=ct),
                  AvgPool2D("avg", pool=(2, 2), result_type=T(8, 2, True, "RND_CONV", "SAT")),
                  conv(Conv2D, "conv2", (2, 2), 3, 4, strides=(2, 2)), ReLU("relu2", result_type=relu_t),
                  GlobalAvgPool2D("gap")]
    elif kind == "conv1d":
        shape = (16, 3)
        layers = [conv(Conv1D, "conv1", (5,), 3, 4, padding="same", strides=(2,), result_type=ct),
                  ReLU("relu1", result_type=relu_t), MaxPool1D("pool1", pool=(2,)),
                  conv(Conv1D, "conv2", (3,), 4, 4), AvgPool1D("avg", pool=(2,)), Flatten("flatten")]
    elif kind == "gap1d":
        shape = (10, 2)
        layers = [conv(Conv1D, "conv1", (3,), 2, 4, result_type=ct), ReLU("relu1"), GlobalAvgPool1D("gap")]
    else:
        raise ValueError(kind)
    n_flat = Network("probe", shape, list(layers), input_type=it).output_shape[0]
    layers.append(Dense("fc", weight=_ints(rng, wt, (n_flat, 3)), bias=_ints(rng, bt, (3,)), weight_type=wt,
                        bias_type=bt, result_type=dt))
    return Network(f"cnn-{kind}-{precision}", shape, layers, input_type=it)


def _project_and_csim(net: Network, backend: str, out, n: int = 2000, data: np.ndarray | None = None) -> dict:
    t0 = time.perf_counter()
    p = write_project(net, load_board(BOARDS[backend]), backend, out / "prj")
    write_s = time.perf_counter() - t0
    r = csim_check(p, net, verification_inputs(net, data, n), cache=out / "csim")
    r["write_s"] = round(write_s, 2)
    print(f"{net.name} {backend}: samples {r['samples']}, bit-exact {r['csim_bit_exact']}, write {r['write_s']} s, "
          f"compile {r['compile_s']} s ({r['units']} units, split {r['split']}), simulate {r['simulate_s']} s")
    return {"project": p, **r}


@pytest.fixture(scope="session", params=["vitis", "quartus"])
def tiny(request, tmp_path_factory):
    """The tiny CNN's project and its C simulation on 2,000 vectors, once per backend."""
    net = cnn("tiny")
    return net, _project_and_csim(net, request.param, tmp_path_factory.mktemp(f"tiny-{request.param}"))


def test_tiny_cnn_csim_is_bit_exact_on_2000_inputs_including_corners(tiny):
    net, r = tiny
    assert r["csim_bit_exact"] and r["mismatches"] == 0 and r["samples"] == 2000, r["first_mismatch"]


def test_tiny_cnn_vectors_reach_the_saturation_corners(tiny):
    """The conv result saturates at both ends on the corner vectors, so the SAT casts are exercised."""
    from codesign.core.reference import Tensor, trace

    net, _ = tiny
    conv_out = trace(net.layers, Tensor(verification_inputs(net, None, 2000), net.input_type))[0]
    t = net.layers[0].result_type
    assert (conv_out.values == t.max_int).any() and (conv_out.values == t.min_int).any()


def test_cnn_project_is_streamed_with_the_ir_precisions_and_no_transpose(tiny):
    net, r = tiny
    p = r["project"]
    assert p.io_type == "io_stream" and p.stateful
    cfg = (p.directory / "hls4ml_config.yml").read_text()
    assert "IOType: io_stream" in cfg
    conv = net.layers[0]
    for t in (conv.weight_type, conv.bias_type, conv.result_type, net.layers[-1].result_type):
        assert t.to_hls() in cfg
    src = next(p.directory.rglob("myproject.cpp")).read_text()
    assert "conv_2d_cl" in src and "pooling2d_cl" in src
    assert "transpose" not in src.lower()  # flattened in the stream's (channels-last) order, as the IR
    if p.backend == "vitis":  # the Dense's distributed arithmetic compiled as a unit of its own (hls.build)
        assert r["split"] and r["units"] == 3


def test_same_padding_is_an_explicit_zero_padding_in_the_input_type(tmp_path):
    net = cnn("same-strided")
    p = write_project(net, load_board("zcu102"), "vitis", tmp_path / "prj")
    src = (p.directory / "firmware" / "myproject.cpp").read_text()
    assert src.count("zeropad2d_cl") == 2
    params = (p.directory / "firmware" / "parameters.h").read_text()
    # conv1: 7x6 at stride 2, 3x3 -> TensorFlow's 'same' pads (1, 1) rows and (0, 1) columns
    block = params[params.index("struct config2 "):]
    assert re.search(r"pad_top = 1;.*pad_bottom = 1;.*pad_left = 0;.*pad_right = 1;", block[:block.index("};")], re.S)


def test_average_pooling_on_intel_backends_is_the_convolution_it_equals(tmp_path):
    """Quartus/oneAPI average in the input type (inexact): the pools become diagonal 2**-k convolutions."""
    net = cnn("avg2d")
    p = write_project(net, load_board(BOARDS["oneapi"]), "oneapi", tmp_path / "prj")
    assert p.strategies["avg"] == p.strategies["gap"] == "Resource"  # convolutions, planned as the others
    src = next(p.directory.rglob("myproject.cpp")).read_text()
    assert "pooling" not in src and src.count("conv_2d_cl") == 4
    text = next(p.directory.rglob(f"w{p.model.graph['avg'].index}.h")).read_text()
    values = [float(v) for v in re.findall(r"[-+]?\d+\.\d+", text.split("= {", 1)[1])]
    assert sorted(set(values)) == [0.0, 0.25] and values.count(0.25) == 2 * 2 * 3  # 2x2 window, 3 channels


@pytest.mark.parametrize("backend", ["vitis", "quartus"])
def test_overlapping_pooling_windows_are_refused_naming_the_layer(tmp_path, backend):
    net = cnn("tiny")
    net.layers[2] = MaxPool2D("pool1", pool=(2, 2), strides=(1, 1))
    net = Network(net.name, net.input_shape, net.layers[:3] + [Flatten("flatten"), Dense(
        "fc", weight=np.zeros((18, 3), dtype=np.int64), bias=np.zeros(3, dtype=np.int64), weight_type=T(6, 1),
        bias_type=T(8, 2))], input_type=net.input_type)
    with pytest.raises(BackendError, match=r"layer 'pool1' \(MaxPool2D\): .*strides equal to the pool"):
        write_project(net, load_board(BOARDS[backend]), backend, tmp_path / "prj")


def test_cnn_in_io_parallel_is_refused(tmp_path):
    with pytest.raises(BackendError, match=r"is convolutional: its HLS project is io_stream"):
        write_project(cnn("tiny"), load_board("zcu102"), "vitis", tmp_path / "prj", io_type="io_parallel")


def test_oneapi_cnn_project_is_written_and_csim_reported_as_skipped(tmp_path):
    net = cnn("tiny")
    p = write_project(net, load_board(BOARDS["oneapi"]), "oneapi", tmp_path / "prj")
    assert (p.directory / "CMakeLists.txt").is_file()
    r = csim_check(p, net, verification_inputs(net, None, 4))
    assert r["csim_bit_exact"] is None and "icpx" in r["csim_skipped"]


# backend and sparse form: Vitis with distributed arithmetic (the default), Vivado with hls4ml's Latency, Quartus
FORMS = [("vitis", "auto"), ("vivado", "latency"), ("quartus", "auto")]
SLOW_CASES = [(kind, backend, form, precision) for kind in ("tiny", "same-strided", "conv1d", "avg2d", "gap1d")
              for backend, form in FORMS for precision in PRECISIONS
              if not (kind == "tiny" and precision == "w6-sat" and backend != "vivado")]  # the default suite's


@pytest.mark.slow
@pytest.mark.parametrize("kind, backend, form, precision", SLOW_CASES)
def test_cnn_csim_is_bit_exact(tmp_path, kind, backend, form, precision):
    net = cnn(kind, precision, seed=len(kind))
    p = write_project(net, load_board(BOARDS[backend]), backend, tmp_path / "prj", form=form)
    want = {"auto": "distributed_arithmetic", "latency": "Latency"}[form] if backend != "quartus" else "Resource"
    assert all(p.strategies[l.name] == want for l in net.layers if isinstance(l, (Conv1D, Conv2D)))
    r = csim_check(p, net, verification_inputs(net, None, 2000), cache=tmp_path / "csim")
    print(f"{net.name} {backend} {form}: bit-exact {r['csim_bit_exact']}, compile {r['compile_s']} s, "
          f"simulate {r['simulate_s']} s")
    assert r["csim_bit_exact"] and r["samples"] == 2000, r["first_mismatch"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["vitis", "quartus"])
def test_hls4ml_conv2d_example_at_the_default_precision_is_bit_exact(digits, tmp_path, backend):
    """hls4ml's float Conv2D example (8x8x1, conv 3x3 'same' x2, ReLU, flatten, dense 10) quantized as the
    flow quantizes a float network (8-bit weights, 16-bit results), on the digits images and the corners."""
    import codesign
    from codesign.compress.quantize import quantize_network

    x = digits.X_test.reshape(-1, 8, 8, 1)
    net = quantize_network(codesign.load(MODELS / "KERAS_conv2d_model.json"), digits.input_type, 8, result_bits=16,
                           calib=digits.X_train.reshape(-1, 8, 8, 1))
    r = _project_and_csim(net, backend, tmp_path, n=2000, data=x)
    assert r["csim_bit_exact"] and r["samples"] == 2000, r["first_mismatch"]
    if backend == "vitis":
        assert r["split"]  # the distributed-arithmetic Dense compiles as a unit of its own


@pytest.mark.slow
def test_flow_hls_step_takes_a_cnn_at_the_default_precision(tmp_path):
    """``codesign hls`` on a CNN artifact: hls4ml's Conv2D example quantized by the flow (no budget), its project
    written and C-simulated bit-exact on the flow's 10,000 vectors (the digits test set first)."""
    from codesign.app.artifact import Artifact
    from codesign.app.flow import step_compress, step_hls
    from codesign.budget import Budget

    art = Artifact(tmp_path / "cnn")
    art.claim()
    step_compress(art, str(MODELS / "KERAS_conv2d_model.json"), "digits", Budget.parse(None, load_board("pynq-z2")))
    r = step_hls(art, "vitis")
    print({k: r[k] for k in ("samples", "csim_bit_exact", "write_s", "compile_s", "simulate_s", "split", "units")})
    assert r["csim_bit_exact"] and r["samples"] == 10000 and r["split"]
