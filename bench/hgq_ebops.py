"""HGQ's EBOPs, recomputed from the formats, against our Yosys LUTs, layer by layer.

    python bench/hgq_ebops.py [--family xc7]

HGQ trains with EBOPs ("effective bit operations") as its resource term and reports that they track
the LUTs of da4ml's adder graphs. The proxy ``.h5`` files do not store the EBOPs, so they are recomputed
here from the formats the files carry: for each Dense and each convolution kernel (built once in the
streaming RTL, so counted once, not per output pixel),

    EBOPs = sum over nonzero weights w[r, o] of  bits(x_r) * bits(w[r, o])

with ``bits(x_r)`` the width of input element r's format (per element where a per-element quantizer
sets it, 0 where its width is 0; a channel's widest format over the image for a kernel) and
``bits(w)`` the bit length of the weight's odd integer mantissa (the bits a constant multiplication by
it needs, trailing zeros being a wire shift). Each layer's LUTs are Yosys's (``synth_xilinx``, no DSPs)
for that layer's stage of our streaming RTL, as ``codesign estimate`` synthesizes it. Writes
``bench/results/hgq_ebops.json``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import MODELS, write_results

MODELS_RUN = ("hgq_mnist_homogeneous", "hgq_mnist_heterogeneous")


def input_bits(net) -> dict[str, np.ndarray]:
    """For each Dense/Conv: the width of each row's input element (a Conv's per channel, widest over the image)."""
    from codesign.core.layers import Conv, Dense, Flatten, MaxPool, Quant, ReLU

    t_in = net.input_type
    bits = np.full(net.input_shape, t_in.width)
    out = {}
    for layer, t, shape in zip(net.layers, net.tensor_types(), net.shapes()):
        if isinstance(layer, Quant) and layer.per_element:
            bits = layer.element_width.copy()
        elif isinstance(layer, (Quant, ReLU)) and getattr(layer, "result_type", None) is not None:
            bits = np.full(shape, layer.result_type.width)
        elif isinstance(layer, ReLU):
            pass
        elif isinstance(layer, Flatten):
            bits = bits.reshape(-1)
        elif isinstance(layer, MaxPool):
            bits = np.broadcast_to(bits.reshape(-1, bits.shape[-1]).max(axis=0), shape)
        elif isinstance(layer, Dense):
            out[layer.name] = bits.reshape(-1)
            bits = np.full(shape, t.width)
        elif isinstance(layer, Conv):
            per_channel = bits.reshape(-1, bits.shape[-1]).max(axis=0)
            out[layer.name] = np.tile(per_channel, int(np.prod(layer.kernel)))
            bits = np.full(shape, t.width)
    return out


def weight_bits(w: np.ndarray) -> np.ndarray:
    """Bit length of each weight's odd mantissa (0 for a zero weight)."""
    a = np.abs(w.astype(np.int64))
    odd = np.where(a > 0, a // (a & -a).clip(min=1), 0)
    return np.array([int(v).bit_length() for v in odd.ravel()]).reshape(w.shape)


def ebops(net) -> dict[str, int]:
    from codesign.core.layers import Conv

    rows = input_bits(net)
    out = {}
    for layer in net.layers:
        if layer.name in rows:
            w = layer.weight.reshape(-1, layer.weight.shape[-1]) if isinstance(layer, Conv) else layer.weight
            out[layer.name] = int((rows[layer.name][:, None] * weight_bits(w)).sum())
    return out


def stage_luts(net, family: str) -> dict[str, tuple[int, list[str]]]:
    """Yosys LUTs of each stage of our streaming RTL (the layer that opens it, with its element-wise layers), and
    the names of the stage's layers."""
    from rtl_sim.stream import emit_stream_verilog, is_streaming
    from rtl_sim.synth import stage_networks, synthesize
    from rtl_sim.verilog import emit_verilog

    out = {}
    for name, sub in stage_networks(net):
        d = emit_stream_verilog(sub, stream_out=True) if is_streaming(sub) else emit_verilog(sub)
        out[name] = (int(synthesize(d.verilog, d.top, family, dsp=False)["lut"]), [l.name for l in sub.layers])
    return out


def main() -> None:
    import codesign

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="xc7")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for m in MODELS_RUN:
        net = codesign.load(MODELS / f"{m}.h5")
        e, luts = ebops(net), stage_luts(net, args.family)
        for name, (lut, layers) in luts.items():
            weighted = next((n for n in layers if n in e), None)  # a pooling stage has none
            rows.append({"model": m, "stage": name, "layer": weighted, "ebops": e.get(weighted),
                         "yosys_lut": lut})
        tot_e, tot_l = sum(e.values()), sum(v[0] for v in luts.values())
        rows.append({"model": m, "stage": "total", "layer": None, "ebops": tot_e, "yosys_lut": tot_l})
        print(f"{m}: EBOPs {tot_e:,}  Yosys LUTs {tot_l:,}  LUT/EBOP {tot_l / max(tot_e, 1):.2f}")
        for name, v in e.items():
            print(f"  {name:24s} EBOPs {v:6,}")
    print("\n| model | stage | EBOPs (its weighted layer) | Yosys LUTs | LUT/EBOP |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        ratio = f"{r['yosys_lut'] / r['ebops']:.2f}" if r["ebops"] else "-"
        print(f"| {r['model']} | {r['stage']} | {r['ebops'] or '-'} | {r['yosys_lut']:,} | {ratio} |")
    write_results("hgq_ebops", t0, family=args.family, rows=rows)


if __name__ == "__main__":
    main()
