"""Calibrate the streaming part of the CNN cost model (``codesign.compress.conv_cost``) against Yosys.

For each saved quantized CNN (``Network.save`` directories given on the command line): the whole
streaming design (``rtl_sim.stream.emit_stream_verilog``) is synthesized, and so is each kernel
datapath on its own (the conv kernel as the Dense over the window, with the ReLU/Quant after it,
through ``rtl_sim.verilog.emit_verilog``; the Dense tail likewise). What the whole design costs
beyond its kernels is the streaming overhead (line buffers, window taps and padding masks,
pooling, Flatten's shift register, control), which is what ``conv_cost`` prices around
``cost.dense_cost``. Prints, per design: Yosys totals, Yosys kernels, the overhead measured and
as priced, and the analytic total against Yosys; writes them to bench/results/conv_cost.json.

    .venv/bin/python bench/calibrate_conv_cost.py DIR [DIR ...] [--board pynq-z2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def kernel_networks(net):
    """Each Conv/Dense of ``net`` as a flat Dense network with the element-wise layers after it."""
    from codesign.compress.conv_cost import kernel_dense
    from codesign.core.layers import Conv, Dense, Quant, ReLU
    from codesign.core.network import Network

    types = net.tensor_types()
    t_in = net.input_type
    out = []
    for i, layer in enumerate(net.layers):
        if isinstance(layer, (Conv, Dense)):
            d = kernel_dense(layer) if isinstance(layer, Conv) else layer
            post, j = [], i + 1
            while j < len(net.layers) and isinstance(net.layers[j], (ReLU, Quant)):
                post.append(net.layers[j])
                j += 1
            out.append((layer.name, Network(f"k_{layer.name}", (d.weight.shape[0],), [d, *post], t_in)))
        t_in = types[i] or t_in
    return out


def measure(path: str, board_name: str) -> dict:
    from codesign.board import load_board
    from codesign.compress.conv_cost import cnn_parts
    from codesign.compress.cost import network_cost, total_cost
    from codesign.core.network import Network
    from rtl_sim.stream import emit_stream_verilog
    from rtl_sim.synth import synthesize
    from rtl_sim.verilog import emit_verilog

    board = load_board(board_name)
    fam = board.synth_family
    net = Network.load(path)
    t0 = time.perf_counter()
    d = emit_stream_verilog(net, mult="lut")
    full = synthesize(d.verilog, d.top, fam, dsp=False)
    kernels = {}
    for name, sub in kernel_networks(net):
        k = emit_verilog(sub, mult="lut")
        r = synthesize(k.verilog, k.top, fam, dsp=False)
        kernels[name] = {c: r[c] for c in ("lut", "ff", "carry")}
    parts = cnn_parts(net, board, "lut")
    priced_kernels = {p["name"]: p["kernel"] for p in parts if "kernel" in p}
    over_priced = {c: sum(p[c] for p in parts) - sum(v[c] for v in priced_kernels.values()) for c in ("lut", "ff")}
    over_meas = {c: full[c] - sum(v[c] for v in kernels.values()) for c in ("lut", "ff")}
    analytic = total_cost(network_cost(net, board, "lut"))
    return {"design": path, "yosys": {c: full[c] for c in ("lut", "ff", "carry", "bram")}, "cells": full["cells"],
            "yosys_kernels": kernels, "analytic_kernels": priced_kernels, "overhead_yosys": over_meas,
            "overhead_analytic": {c: round(v) for c, v in over_priced.items()}, "analytic": analytic,
            "lut_error": round(analytic["lut"] / max(full["lut"], 1) - 1, 4),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--board", default="pynq-z2")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "conv_cost.json"))
    args = ap.parse_args()
    rows = []
    for p in args.dirs:
        r = measure(p, args.board)
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "cells"}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
