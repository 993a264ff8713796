"""hls4ml projects for graph networks (Add, Concatenate, a tensor read by several layers): C simulation bit-exact.

The networks are built in the IR with random integer weights of their types and result types that round and
saturate (or wrap), so the verification vectors (the input type's corners first) reach the casts' corners.
The default suite builds two projects, at hls4ml's Latency strategy (about a third of the compile time of
distributed arithmetic): a residual MLP in ``io_parallel`` (tests/test_graph.py's ``residual_net``: a Dense
shortcut on the input, an Add with a rounding, saturating cast, a Concatenate of the sum and a hidden tensor) and
a residual CNN in ``io_stream`` (an identity shortcut, a 1x1-convolution projection shortcut, a channel
Concatenate of a block's output with its input, max pooling, Flatten, Dense). Both at the default form
(distributed arithmetic), on Quartus, and a Conv1D CNN with global average pooling after a Concatenate are
``slow``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from codesign.board import load_board
from codesign.core.fixed import FixedType
from codesign.core.layers import (Add, Concatenate, Conv1D, Conv2D, Dense, Flatten, GlobalAvgPool1D, MaxPool2D, Quant,
                                  ReLU)
from codesign.core.network import INPUT, Network
from codesign.core.verify import verification_inputs
from codesign.errors import BackendError
from hls.csim import csim_check
from hls.project import hls_layers, write_project
from tests.builders import random_dense
from tests.test_graph import residual_net

T = FixedType
BOARDS = {"vitis": "zcu102", "quartus": "arria10-gx1150"}
WT, BT = T(4, 1), T(6, 2)
CONV_T = T(8, 3, True, "RND_CONV", "SAT")
N_VECTORS = 300


def _ints(rng: np.random.Generator, t: FixedType, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(t.min_int, t.max_int + 1, size=shape)


def _conv(rng: np.random.Generator, name: str, k: int, c_in: int, c_out: int, cls: type = Conv2D, **kw) -> Conv2D:
    kernel = (k, k) if cls is Conv2D else (k,)
    return cls(name, weight=_ints(rng, WT, (*kernel, c_in, c_out)), bias=_ints(rng, BT, (c_out,)), weight_type=WT,
               bias_type=BT, **kw)


def _dense_tail(rng: np.random.Generator, name: str, shape: tuple[int, ...], layers: list, it: FixedType) -> Dense:
    n = Network("probe", shape, list(layers), input_type=it).output_shape[0]
    return random_dense(rng, name, n, 3, WT, BT, result_type=T(9, 4, True, "RND", "SAT"))


def residual_cnn(seed: int = 0) -> Network:
    """6x6x1 -> stem 3x3 (2 ch) -> ReLU -> [identity block: conv, ReLU, conv, + stem, ReLU] -> [projection block:
    conv 3x3 to 3 ch, ReLU, + a 1x1 conv of the block input (wrapping)] -> concatenate with the block input (5 ch) -> max-pool
    2x2 -> Flatten -> Dense 3. The identity block's input is read twice, the projection block's three times; the
    stem's ReLU casts to an unsigned type, so the first Add sums a signed and an unsigned operand."""
    rng = np.random.default_rng(seed)
    it = T(6, 1)
    layers = [_conv(rng, "stem", 3, 1, 2, padding="same", result_type=CONV_T), ReLU("r0", result_type=T(6, 2, False)),
              _conv(rng, "c1", 3, 2, 2, padding="same", result_type=CONV_T), ReLU("r1"),
              _conv(rng, "c2", 3, 2, 2, padding="same", result_type=CONV_T),
              Add("add1", inputs=("c2", "r0"), result_type=T(8, 3, True, "RND", "SAT")), ReLU("r2"),
              _conv(rng, "c3", 3, 2, 3, padding="same", result_type=CONV_T), ReLU("r3"),
              _conv(rng, "proj", 1, 2, 3, inputs=("r2",), result_type=T(7, 3, True, "TRN", "WRAP")),
              Add("add2", inputs=("r3", "proj")),  # exact: no cast
              Concatenate("cat", inputs=("add2", "r2"), result_type=T(8, 4, True, "RND_CONV", "SAT")),
              MaxPool2D("pool", pool=(2, 2)), Flatten("flat")]
    layers.append(_dense_tail(rng, "fc", (6, 6, 1), layers, it))
    return Network("res-cnn", (6, 6, 1), layers, input_type=it)


def concat_gap_cnn(seed: int = 1) -> Network:
    """16x2 -> conv1d 3 -> ReLU -> two branches (conv 3 'same', conv 1) -> Concatenate -> global average -> Dense."""
    rng = np.random.default_rng(seed)
    it = T(6, 0, False)
    layers = [_conv(rng, "c0", 3, 2, 3, Conv1D, padding="same", result_type=CONV_T), ReLU("r0"),
              _conv(rng, "a", 3, 3, 2, Conv1D, padding="same", result_type=CONV_T),
              _conv(rng, "b", 1, 3, 2, Conv1D, inputs=("r0",)),
              Concatenate("cat", inputs=("a", "b")), GlobalAvgPool1D("gap", result_type=T(10, 5, True, "RND", "SAT"))]
    layers.append(_dense_tail(rng, "fc", (16, 2), layers, it))
    return Network("cat-gap", (16, 2), layers, input_type=it)


def _project_and_csim(net: Network, backend: str, out, form: str = "auto") -> dict:
    t0 = time.perf_counter()
    p = write_project(net, load_board(BOARDS[backend]), backend, out / "prj", form=form)
    write_s = time.perf_counter() - t0
    r = csim_check(p, net, verification_inputs(net, None, N_VECTORS), cache=out / "csim")
    print(f"{net.name} {backend} {form}: bit-exact {r['csim_bit_exact']} on {r['samples']}, write {write_s:.1f} s, "
          f"compile {r['compile_s']} s, simulate {r['simulate_s']} s")
    return {"project": p, **r}


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    net = residual_net(result_type=T(8, 3, True, "RND_CONV", "SAT"))
    return net, _project_and_csim(net, "vitis", tmp_path_factory.mktemp("res-mlp"), form="latency")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    net = residual_cnn()
    return net, _project_and_csim(net, "vitis", tmp_path_factory.mktemp("res-cnn"), form="latency")


def test_residual_mlp_csim_is_bit_exact_in_io_parallel(mlp):
    net, r = mlp
    assert r["project"].io_type == "io_parallel"
    assert r["csim_bit_exact"] and r["mismatches"] == 0 and r["samples"] == N_VECTORS, r["first_mismatch"]


def test_residual_cnn_csim_is_bit_exact_in_io_stream(resnet):
    net, r = resnet
    assert r["project"].io_type == "io_stream"
    assert r["csim_bit_exact"] and r["mismatches"] == 0 and r["samples"] == N_VECTORS, r["first_mismatch"]


def test_residual_cnn_vectors_reach_the_merge_casts_saturation(resnet):
    """The first Add's rounding, saturating cast saturates at both ends on the verification vectors."""
    net, _ = resnet
    outs = dict(zip([l.name for l in net.layers], net.trace_int(verification_inputs(net, None, N_VECTORS))))
    t = net.layer("add1").result_type
    assert (outs["add1"].values == t.max_int).any() and (outs["add1"].values == t.min_int).any()


def test_residual_cnn_project_uses_hls4ml_merge_and_clone_layers(resnet):
    net, r = resnet
    src = (r["project"].directory / "firmware" / "myproject.cpp").read_text()
    assert src.count("nnet::add<") == 2 and src.count("nnet::concatenate3d<") == 1
    assert src.count("nnet::clone_stream<") == 2  # r0 read twice, r2 three times
    assert "transpose" not in src.lower()


def test_merge_of_three_inputs_is_refused_naming_it(tmp_path):
    layers = [Dense("a", weight=np.ones((4, 4), dtype=np.int64), weight_type=WT, bias_type=BT), ReLU("r"),
              Add("sum3", inputs=("a", "r", INPUT))]
    net = Network("three", (4,), layers, input_type=T(6, 1))
    with pytest.raises(BackendError, match=r"layer 'sum3': hls4ml 1.3's merge layers take two inputs, not 3"):
        write_project(net, load_board("zcu102"), "vitis", tmp_path / "prj")


def test_quantizer_on_a_tensor_read_elsewhere_is_refused_naming_it():
    layers = [Dense("a", weight=np.ones((4, 4), dtype=np.int64), weight_type=WT, bias_type=BT),
              Quant("q", result_type=T(6, 2)), Add("add", inputs=("a", "q"))]
    net = Network("fan-quant", (4,), layers, input_type=T(6, 1))
    with pytest.raises(BackendError, match=r"layer 'q': a quantizer that does not directly follow"):
        hls_layers(net)


def test_hardware_layers_of_a_graph_name_their_inputs_past_dropped_layers():
    """The Output head is dropped; every merge reads the layers it read in the IR."""
    net = residual_net()
    hw = {l.name: l for l in hls_layers(net)}
    assert "out" not in hw and hw["s"].inputs == (INPUT,)
    assert hw["add"].inputs == ("b", "s") and hw["cat"].inputs == ("add", "r")


@pytest.mark.slow
@pytest.mark.parametrize("kind, backend", [(k, b) for k in ("mlp", "cnn", "cat-gap") for b in ("vitis", "quartus")])
def test_graph_csim_is_bit_exact(tmp_path, kind, backend):
    """Vitis at the default form (distributed arithmetic: the default suite takes hls4ml's Latency, which compiles
    in about a third of the time), Quartus (Resource; global average pooling as the convolution it equals)."""
    net = {"mlp": lambda: residual_net(result_type=T(8, 3, True, "RND_CONV", "SAT")), "cnn": residual_cnn,
           "cat-gap": concat_gap_cnn}[kind]()
    r = _project_and_csim(net, backend, tmp_path)
    assert r["csim_bit_exact"] and r["mismatches"] == 0, r["first_mismatch"]


def test_stream_read_by_more_layers_than_hls4ml_clones_is_refused_naming_it(tmp_path):
    rng = np.random.default_rng(0)
    branches = [_conv(rng, f"b{i}", 1, 1, 1, inputs=(INPUT,)) for i in range(8)]
    adds = [Add("s1", inputs=("b0", "b1"))] + [Add(f"s{i}", inputs=(f"s{i - 1}", f"b{i}")) for i in range(2, 8)]
    net = Network("fan8", (4, 4, 1), [*branches, *adds, Flatten("flat")], input_type=T(6, 1))
    with pytest.raises(BackendError, match=r"layer 'input': read by 8 layers; hls4ml 1.3 copies a stream to at most 7"):
        write_project(net, load_board("zcu102"), "vitis", tmp_path / "prj")
