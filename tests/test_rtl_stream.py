"""Streaming CNN RTL: bit-exact against the reference, one image per input-pixel count of cycles, never stalls.

The default cases share one small CNN (same and valid padding, max-pooling, two convolutions, a Dense
tail) built once for the bulk harness and once for cocotb; the larger and rarer shapes are ``slow``.
"""

from __future__ import annotations

import copy
import subprocess

import numpy as np
import pytest

from codesign.core.fixed import FixedType
from codesign.core.layers import (AvgPool1D, AvgPool2D, BatchNorm, Conv1D, Conv2D, Flatten, GlobalAvgPool1D,
                                  GlobalAvgPool2D, Layer, MaxPool1D, MaxPool2D, Output, ReLU)
from codesign.core.network import Network
from codesign.core.verify import verification_inputs
from codesign.errors import BackendError, LayerError
from codesign.tools import find_verilator
from rtl_sim.cosim import cosimulate, describe_mismatch, run_cocotb, write_rtl, load_design
from rtl_sim.stream import emit_stream_verilog
from tests.builders import random_dense
from tests.conftest import MODELS

WT = FixedType(6, 1)  # kernel and Dense weights: integers in [-32, 31]


def _conv(rng, name, cls, k, c_in, c_out, sparsity=0.3, **kw):
    w = rng.integers(-32, 32, size=(*k, c_in, c_out))
    w[rng.random(w.shape) < sparsity] = 0
    return cls(name, w, rng.integers(-20, 20, size=c_out), weight_type=WT, bias_type=WT,
               result_type=FixedType(10, 4, True, "RND", "SAT"), **kw)


def _dense(rng, name, n_in, n_out):
    return random_dense(rng, name, n_in, n_out, WT, biases=(-10, 10),
                        result_type=FixedType(12, 5, True, "RND_CONV", "SAT"))


def tiny_cnn(seed: int = 1) -> Network:
    """6x6x1 -> conv 3x3 same (2) -> ReLU -> max-pool 2 -> conv 2x2 valid (3) -> ReLU -> flatten -> dense 4."""
    rng = np.random.default_rng(seed)
    layers = [_conv(rng, "conv1", Conv2D, (3, 3), 1, 2, padding="same"), ReLU("relu1"), MaxPool2D("pool", pool=(2, 2)),
              _conv(rng, "conv2", Conv2D, (2, 2), 2, 3), ReLU("relu2", FixedType(8, 3, False, "RND", "SAT")),
              Flatten("flat"), _dense(rng, "fc", 12, 4), Output("out", "argmax")]
    return Network("tiny_cnn", (6, 6, 1), layers, FixedType(8, 2))


def features_cnn(seed: int = 2) -> Network:
    """A non-square two-channel input, 'same' with stride 2, average pooling, global average pooling."""
    rng = np.random.default_rng(seed)
    layers = [_conv(rng, "conv_s2", Conv2D, (3, 3), 2, 3, padding="same", strides=(2, 2)), ReLU("relu1"),
              _conv(rng, "conv_same", Conv2D, (3, 3), 3, 2, padding="same"), AvgPool2D("avg", pool=(2, 2)),
              GlobalAvgPool2D("gap"), _dense(rng, "fc", 2, 3)]
    return Network("features_cnn", (7, 5, 2), layers, FixedType(8, 2, True, "TRN", "SAT"))


def conv1d_cnn(seed: int = 3) -> Network:
    rng = np.random.default_rng(seed)
    layers = [_conv(rng, "c1", Conv1D, (5,), 3, 4, padding="same"), ReLU("r1"), MaxPool1D("p1", pool=(2,)),
              _conv(rng, "c2", Conv1D, (3,), 4, 2, strides=(2,)), Flatten("flat"), _dense(rng, "fc", 6, 2)]
    return Network("conv1d_cnn", (16, 3), layers, FixedType(8, 3, False))


def digits_sized_cnn(seed: int = 4) -> Network:
    """The shape of the built-in digits CNN: 8x8x1 (digits' input type) -> conv 3x3 same (4) -> ReLU -> max-pool 2
    -> conv 3x3 (8) -> ReLU -> flatten -> dense 10, half the kernel weights pruned."""
    rng = np.random.default_rng(seed)
    layers = [_conv(rng, "conv1", Conv2D, (3, 3), 1, 4, 0.5, padding="same"),
              ReLU("relu1", FixedType(8, 4, False, "RND", "SAT")), MaxPool2D("pool1", pool=(2, 2)),
              _conv(rng, "conv2", Conv2D, (3, 3), 4, 8, 0.5), ReLU("relu2", FixedType(8, 4, False, "RND", "SAT")),
              Flatten("flat"), _dense(rng, "fc", 32, 10), Output("out", "argmax")]
    return Network("digits_cnn_rtl", (8, 8, 1), layers, FixedType(5, 1, False))


@pytest.fixture(scope="module")
def verilator():
    return find_verilator()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny CNN, its RTL directory and one work directory whose cocotb build the cocotb tests share."""
    net = tiny_cnn()
    root = tmp_path_factory.mktemp("stream")
    d = write_rtl(net, root / "rtl")
    return net, d, root


def _images(net: Network, n: int, seed: int = 0) -> np.ndarray:
    return verification_inputs(net, None, n, seed)


def test_tiny_cnn_streams_bit_exact_at_one_image_per_input_pixel_count(tiny, verilator):
    net, d, root = tiny
    q = _images(net, 2000)  # every element at each corner of the input type, corner mixes, then random
    r = cosimulate(net, root / "rtl", root / "bulk", q, mode="bulk")
    print(r.to_json())
    assert r.mismatches == 0 and r.samples == 2000, describe_mismatch(r)
    assert r.ii == d.cycles_per_image == 36 and r.extra["cycles_per_pixel"] == 1.0
    assert r.latency_cycles == d.latency and r.bit_exact


def test_cocotb_measures_the_designed_latency_and_cycles_per_image(tiny, verilator):
    net, d, root = tiny
    q = _images(net, 12, seed=1)
    r = cosimulate(net, root / "rtl", root / "cosim" / "diagnose", q, mode="cocotb")
    assert r.bit_exact and r.latency_cycles == d.latency and r.ii == 36.0, describe_mismatch(r)


def test_input_gaps_anywhere_leave_every_result_unchanged(tiny, verilator):
    """in_valid may drop at any beat, inside an image or between images (the design never stalls)."""
    net, d, root = tiny
    q = _images(net, 8, seed=2)
    rng = np.random.default_rng(5)
    gaps = (rng.random(len(q) * d.pixels) < 0.3) * rng.integers(1, 40, size=len(q) * d.pixels)
    res = run_cocotb(load_design(root / "rtl"), root / "rtl", root / "cosim" / "diagnose", q, gaps=gaps.tolist())
    from rtl_sim.cosim import _from_bus_ints

    got = _from_bus_ints([int(v) for v in res["outputs"]], d.out_type, d.n_out)
    assert got.tolist() == net.forward_int(q).values.tolist()


def test_a_changed_kernel_weight_is_caught_and_names_the_conv_layer(tiny, verilator):
    net, d, root = tiny
    changed = copy.deepcopy(net)
    w = changed.layer("conv2").weight
    i = int(np.flatnonzero(w)[0])
    w.flat[i] = -w.flat[i]  # the RTL keeps the original weight
    q = _images(net, 300, seed=3)
    r = cosimulate(changed, root / "rtl", root / "cosim", q, mode="bulk")
    assert not r.bit_exact and r.mismatches > 0
    msg = describe_mismatch(r)
    assert "first diverging layer 'conv2' (layers conv2, relu2)" in msg and "position (" in msg, msg


def test_only_nonzero_kernel_weights_cost_hardware():
    net = tiny_cnn()
    d = emit_stream_verilog(net, datapath="csd")  # one constant multiplier per nonzero weight, counted
    for name in ("conv1", "conv2"):
        assert d.multipliers[name]["nonzero"] == np.count_nonzero(net.layer(name).weight)
    pruned = copy.deepcopy(net)
    pruned.layer("conv1").weight[..., 1] = 0  # a whole filter: its channel is a constant downstream
    p = emit_stream_verilog(pruned)
    lb = {l["name"]: l for l in p.layers}
    assert lb["pool"]["line_buffer_bits"] * 2 == {l["name"]: l for l in d.layers}["pool"]["line_buffer_bits"]


@pytest.mark.parametrize("make, kernels, widths", [(tiny_cnn, [(3, 3), (2, 2), (2, 2)], [6, 6, 3]),
                                                   (conv1d_cnn, [(1, 5), (1, 2), (1, 3)], [16, 16, 8])])
def test_line_buffers_hold_the_window_reach(make, kernels, widths):
    """(kh - 1) rows plus kw - 1 pixels per window stage, 1-D layers as one row."""
    d = emit_stream_verilog(make())
    assert [l["line_buffer_pixels"] for l in d.layers] == [(kh - 1) * w + kw - 1 for (kh, kw), w in zip(kernels, widths)]


def test_stream_verilog_is_lint_clean(tmp_path, verilator):
    for net in (tiny_cnn(), features_cnn()):
        d = write_rtl(net, tmp_path / net.name)
        files = [str(tmp_path / net.name / f"{d.top}.v"), str(tmp_path / net.name / f"{d.top}_axis.v")]
        proc = subprocess.run([*verilator.command, "--lint-only", "-Wall", "--top-module", f"{d.top}_axis", *files],
                              capture_output=True, text=True, env=verilator.environ())
        assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr[:2000]


class Upsample(Layer):
    """A layer the IR may one day hold that the streaming RTL does not build."""

    kind = "Upsample"


def _quant_bn():
    return BatchNorm("bn", np.ones(2), np.zeros(2), np.zeros(2), np.ones(2), scale=np.ones(2), shift=np.zeros(2),
                     scale_type=WT, shift_type=WT)


@pytest.mark.parametrize("make, msg", [
    (_quant_bn, r"^layer 'bn' \(BatchNorm\): fold it into the layer before it \(compression does\) before emitting RTL$"),
    (lambda: Upsample("up"), r"^layer 'up' \(Upsample\): not supported by the streaming RTL emitter; supported: Conv1D, "
     r"Conv2D, MaxPool1D, MaxPool2D, AvgPool1D, AvgPool2D, GlobalAvgPool1D, GlobalAvgPool2D, ReLU, Quant, Flatten, "
     r"Dense, Output$"),
])
def test_unsupported_layers_are_refused_naming_the_layer(make, msg):
    conv = _conv(np.random.default_rng(0), "c", Conv2D, (3, 3), 1, 2)
    net = Network("bad", (6, 6, 1), [conv, make(), Flatten("f")], FixedType(8, 2))
    with pytest.raises(BackendError, match=msg):
        emit_stream_verilog(net)


def test_a_flat_input_is_refused_with_the_emitter_to_use():
    net = Network("mlp", (12,), [_dense(np.random.default_rng(0), "fc", 12, 2)], FixedType(8, 2))
    with pytest.raises(BackendError, match=r"network 'mlp': the streaming RTL takes a \(length, channels\) or "
                       r"\(height, width, channels\) input, not \(12,\); emit_verilog builds flat inputs"):
        emit_stream_verilog(net)


def test_a_kernel_taller_than_the_input_with_same_padding_is_refused():
    rng = np.random.default_rng(0)
    net = Network("tall", (2, 4, 1), [_conv(rng, "big", Conv2D, (5, 5), 1, 1, padding="same"), Flatten("f")],
                  FixedType(8, 2))
    with pytest.raises(BackendError, match=r"layer 'big': 'same' padding of a 5x5 kernel on a 2x4 input needs"):
        emit_stream_verilog(net)


@pytest.mark.slow
@pytest.mark.parametrize("make", [features_cnn, conv1d_cnn])
def test_strides_same_padding_average_pooling_and_1d_stream_bit_exact(make, tmp_path, verilator):
    net = make()
    d = write_rtl(net, tmp_path / "rtl")
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "cosim", _images(net, 2000), mode="bulk")
    print(r.to_json())
    assert r.bit_exact and r.ii == d.pixels and r.latency_cycles == d.latency, describe_mismatch(r)


@pytest.mark.slow
def test_digits_sized_cnn_is_bit_exact_on_2000_digits_images_within_1_5x_of_the_pixel_count(digits, tmp_path,
                                                                                              verilator):
    net = digits_sized_cnn()
    d = write_rtl(net, tmp_path / "rtl")
    x = np.concatenate([digits.X_train, digits.X_val, digits.X_test]).reshape(-1, 8, 8, 1)  # all 1,797 images
    q = np.concatenate([net.quantize_input(x), _images(net, 2500 - len(x))])
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "cosim", q, mode="bulk")
    print(r.to_json())
    assert r.bit_exact and r.samples >= 2000, describe_mismatch(r)
    assert r.ii == 64 <= 1.5 * 64 and r.latency_cycles == d.latency


def test_per_stage_networks_cover_the_streaming_design_for_synthesis():
    """Per-layer synthesis: each window stage alone (its output the pixel stream), Flatten with the first Dense."""
    from rtl_sim.stream import stream_stages

    stages = stream_stages(tiny_cnn())
    assert [(name, [l.name for l in sub.layers], sub.input_shape) for name, sub in stages] == [
        ("conv1", ["conv1", "relu1"], (6, 6, 1)), ("pool", ["pool"], (6, 6, 2)),
        ("conv2", ["conv2", "relu2"], (3, 3, 2)), ("flat", ["flat", "fc"], (2, 2, 3))]
    d = emit_stream_verilog(stages[0][1], stream_out=True)
    assert (d.n_out, d.outputs_per_image) == (2, 36)


@pytest.mark.slow
def test_per_stage_yosys_counts_add_up_to_the_whole_design():
    from rtl_sim.synth import synthesize, synthesize_layers, total_counts

    net = tiny_cnn()
    parts = total_counts(synthesize_layers(net, "xc7", dsp=False))
    d = emit_stream_verilog(net)
    whole = synthesize(d.verilog, d.top, "xc7", dsp=False)
    print(parts, {k: whole[k] for k in ("lut", "ff")})
    assert abs(parts["lut"] - whole["lut"]) <= 0.1 * whole["lut"] and abs(parts["ff"] - whole["ff"]) <= 0.1 * whole["ff"]


@pytest.mark.slow
def test_input_gaps_between_sparse_stages_leave_every_result_unchanged(tmp_path, verilator):
    """Strided and 'same' stages whose tails overlap the next image's pixels, with idle input cycles anywhere."""
    from rtl_sim.cosim import _from_bus_ints

    net = features_cnn()
    d = write_rtl(net, tmp_path / "rtl")
    q = _images(net, 10, seed=4)
    rng = np.random.default_rng(6)
    gaps = (rng.random(len(q) * d.pixels) < 0.25) * rng.integers(1, 30, size=len(q) * d.pixels)
    res = run_cocotb(load_design(tmp_path / "rtl"), tmp_path / "rtl", tmp_path / "cosim", q, gaps=gaps.tolist())
    got = _from_bus_ints([int(v) for v in res["outputs"]], d.out_type, d.n_out)
    assert got.tolist() == net.forward_int(q).values.tolist()


def random_cnn(seed: int) -> Network:
    """A random small CNN: 1-D or 2-D, 1-3 window layers (conv of random kernel, stride and padding; max or
    average pooling), random ReLUs and result types (every rounding and overflow mode), then Flatten,
    GlobalAvgPool or nothing, and maybe a Dense."""
    r = np.random.default_rng(seed)
    nd = int(r.integers(1, 3))
    shape = ((int(r.integers(4, 20)),) if nd == 1 else (int(r.integers(3, 9)), int(r.integers(3, 9)))) + \
        (int(r.integers(1, 4)),)

    def rtype(signed=True):
        w = int(r.integers(4, 11))
        return FixedType(w, int(r.integers(1, w)), signed, str(r.choice(["TRN", "RND", "RND_CONV"])),
                         str(r.choice(["WRAP", "SAT"])))

    layers, cur = [], shape
    for i in range(int(r.integers(1, 4))):
        kind, sp = r.choice(["conv", "conv", "max", "avg"]), cur[:-1]
        if kind == "conv":
            k = tuple(int(r.integers(1, min(4, s) + 1)) for s in sp)
            wt, c_out = FixedType(int(r.integers(3, 7)), 1), int(r.integers(1, 4))
            w = r.integers(wt.min_int, wt.max_int + 1, size=(*k, cur[-1], c_out))
            w[r.random(w.shape) < 0.4] = 0
            layer = (Conv1D if nd == 1 else Conv2D)(
                f"c{i}", w, r.integers(wt.min_int, wt.max_int + 1, size=c_out), weight_type=wt, bias_type=wt,
                strides=tuple(int(r.integers(1, 3)) for _ in sp), padding=str(r.choice(["valid", "same"])),
                result_type=rtype() if r.random() < 0.8 else None)
        elif kind == "max":
            p = tuple(int(r.integers(1, min(3, s) + 1)) for s in sp)
            layer = (MaxPool1D if nd == 1 else MaxPool2D)(f"m{i}", pool=p,
                                                           strides=tuple(int(r.integers(1, q + 1)) for q in p))
        else:
            opts = [p for p in ([(2,), (4,)] if nd == 1 else [(2, 2), (1, 2), (2, 1), (1, 4)])
                    if all(a <= s for a, s in zip(p, sp))]
            if not opts:
                continue
            layer = (AvgPool1D if nd == 1 else AvgPool2D)(f"a{i}", pool=opts[int(r.integers(len(opts)))],
                                                           result_type=rtype() if r.random() < 0.5 else None)
        try:
            cur = layer.output_shape(cur)
        except LayerError:
            continue
        layers.append(layer)
        if r.random() < 0.6:
            layers.append(ReLU(f"r{i}", rtype(False) if r.random() < 0.5 else None))
    end, n_pos = r.choice(["flat", "gap", "none"]), int(np.prod(cur[:-1]))
    n = cur[-1] if end == "gap" else int(np.prod(cur))
    if end == "gap" and n_pos & (n_pos - 1) == 0:
        layers.append((GlobalAvgPool1D if nd == 1 else GlobalAvgPool2D)("gap"))
    elif end != "none":
        layers.append(Flatten("flat"))
        n = int(np.prod(cur))
    if end != "none" and r.random() < 0.8:
        layers.append(_dense(r, "fc", n, 3))
    in_t = FixedType(int(r.integers(4, 9)), int(r.integers(1, 4)), bool(r.random() < 0.6))
    return Network(f"random_cnn_{seed}", shape, layers or [MaxPool2D("m", pool=(1, 1))], in_t)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_random_cnns_stream_bit_exact_at_the_designed_latency_and_throughput(seed, tmp_path, verilator):
    net = random_cnn(seed)
    print(net.summary())
    d = write_rtl(net, tmp_path / "rtl")
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "cosim", _images(net, 400, seed), mode="bulk")
    assert r.bit_exact and r.ii == d.cycles_per_image and r.latency_cycles == d.latency, describe_mismatch(r)


@pytest.mark.slow
def test_hls4ml_conv2d_example_at_the_default_precision_streams_bit_exact(digits, tmp_path, verilator):
    """hls4ml's float Conv2D example (8x8x1, conv 3x3 'same' x2, ReLU, flatten, dense 10) quantized as the flow
    quantizes a float network (8-bit weights, 16-bit results), on the digits images, the corners and random."""
    import codesign
    from codesign.compress.quantize import quantize_network

    net = quantize_network(codesign.load(MODELS / "KERAS_conv2d_model.json"), digits.input_type, 8, result_bits=16,
                           calib=digits.X_train.reshape(-1, 8, 8, 1))
    d = write_rtl(net, tmp_path / "rtl")
    q = verification_inputs(net, digits.X_test.reshape(-1, 8, 8, 1), 2500)
    r = cosimulate(net, tmp_path / "rtl", tmp_path / "cosim", q, mode="bulk")
    print(r.to_json())
    assert r.bit_exact and r.samples == 2500 and r.ii == 64 and r.latency_cycles == d.latency, describe_mismatch(r)
