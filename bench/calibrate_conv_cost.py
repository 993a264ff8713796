"""Calibrate the streaming part of the CNN cost model (``codesign.compress.conv_cost``) against Yosys.

For each saved quantized CNN (``Network.save`` directories given on the command line): each stage
of the streaming design is synthesized (``rtl_sim.synth.synthesize_layers``: a window stage with
its element-wise layers, Flatten with the first Dense), and so is each kernel datapath on its own (the conv kernel as the Dense over the window, with the ReLU/Quant after it,
through ``rtl_sim.verilog.emit_verilog``; the Dense tail likewise). What the whole design costs
beyond its kernels is the streaming overhead (line buffers, window taps and padding masks,
pooling, Flatten's shift register, control), which is what ``conv_cost`` prices around
``cost.dense_cost``. Prints, per design and stage: Yosys and analytic counts, of the kernels and
of the overhead, and the analytic total against Yosys; writes them to bench/results/conv_cost.json.

    .venv/bin/python bench/calibrate_conv_cost.py [DIR ...] [--board pynq-z2] [--datapath csd]
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


def synth_stages(net, fam: str, datapath: str | None) -> dict:
    """Each streaming stage synthesized (``synthesize_layers``; with ``datapath``, emitted with that kernel
    datapath: "csd" is the one multiplier per weight that ``cost.dense_cost`` was fitted on)."""
    from rtl_sim.stream import emit_stream_verilog, is_streaming
    from rtl_sim.synth import stage_networks, synthesize, synthesize_layers
    from rtl_sim.verilog import emit_verilog

    if datapath is None:
        return synthesize_layers(net, fam, dsp=False, mult="lut")
    out = {}
    for name, sub in stage_networks(net):
        d = (emit_stream_verilog(sub, mult="lut", stream_out=True, datapath=datapath) if is_streaming(sub)
             else emit_verilog(sub, mult="lut", datapath=datapath))
        out[name] = synthesize(d.verilog, d.top, fam, dsp=False)
    return out


def measure(path: str, board_name: str, datapath: str | None = None) -> dict:
    from codesign.board import load_board
    from codesign.compress.conv_cost import cnn_parts
    from codesign.compress.cost import network_cost, total_cost
    from codesign.core.network import Network
    from rtl_sim.synth import synthesize, total_counts
    from rtl_sim.verilog import emit_verilog

    board = load_board(board_name)
    fam = board.synth_family
    net = Network.load(path)
    t0 = time.perf_counter()
    stages = synth_stages(net, fam, datapath)  # one streaming design per stage
    kernels = {}
    for name, sub in kernel_networks(net):
        k = emit_verilog(sub, mult="lut", **({"datapath": datapath} if datapath else {}))
        r = synthesize(k.verilog, k.top, fam, dsp=False)
        kernels[name] = {c: r[c] for c in ("lut", "ff")}
    parts = cnn_parts(net, board, "lut")
    # the analytic parts grouped as the stages are synthesized (Flatten with the Dense after it)
    priced: dict[str, dict[str, float]] = {}
    group = None
    for p in parts:
        if p["name"] in stages:
            group = p["name"]
        g = priced.setdefault(group, {"lut": 0.0, "ff": 0.0, "kernel_lut": 0.0, "kernel_ff": 0.0})
        g["lut"] += p["lut"]
        g["ff"] += p["ff"]
        if "kernel" in p:
            g["kernel_lut"] += p["kernel"]["lut"]
            g["kernel_ff"] += p["kernel"]["ff"]
    rows = {}
    for name, r in stages.items():
        kl = sum(kernels[n]["lut"] for n in kernels if _group_of(n, parts, stages) == name)
        kf = sum(kernels[n]["ff"] for n in kernels if _group_of(n, parts, stages) == name)
        a = priced[name]
        rows[name] = {"yosys": {"lut": r["lut"], "ff": r["ff"]}, "yosys_kernel": {"lut": kl, "ff": kf},
                      "analytic": {"lut": round(a["lut"]), "ff": round(a["ff"])},
                      "analytic_kernel": {"lut": round(a["kernel_lut"]), "ff": round(a["kernel_ff"])},
                      "overhead_yosys": {"lut": r["lut"] - kl, "ff": r["ff"] - kf},
                      "overhead_analytic": {"lut": round(a["lut"] - a["kernel_lut"]), "ff": round(a["ff"] - a["kernel_ff"])}}
    tot = total_counts(stages)
    analytic = total_cost(network_cost(net, board, "lut"))
    return {"design": path, "datapath": datapath or "default", "stages": rows, "yosys": {c: tot[c] for c in ("lut", "ff", "dsp")}, "analytic": analytic,
            "lut_error": round(analytic["lut"] / max(tot["lut"], 1) - 1, 4),
            "ff_error": round(analytic["ff"] / max(tot["ff"], 1) - 1, 4), "seconds": round(time.perf_counter() - t0, 1)}


def _group_of(name: str, parts: list[dict], stages: dict) -> str | None:
    group = None
    for p in parts:
        if p["name"] in stages:
            group = p["name"]
        if p["name"] == name:
            return group
    return None


def digits_cnn_designs(out: Path) -> list[str]:
    """The built-in digits-cnn typed at 4 and 6 bits (QAT's types, no training), 6 bits with 4 channels
    pruned, 5 bits with 700 weights pruned: saved under ``out``; their directories."""
    import torch

    from codesign.board import load_board
    from codesign.compress.channels import channel_scores, prune_channels, shrink
    from codesign.compress.prune import prune_weights, scores
    from codesign.compress.qat import Precision
    from codesign.compress.qcnn import assign_types, network_from_qcnn, qcnn_from_network
    from codesign.importers.builtin import builtin_model
    from codesign.importers.data import load_digits_dataset, shaped_for

    torch.set_num_threads(1)
    net = builtin_model("digits-cnn")
    d = shaped_for(load_digits_dataset(0), net.input_shape)
    board = load_board("pynq-z2")
    dirs = []
    for name, bits, prune in (("q4", 4, None), ("q6", 6, None), ("q6c", 6, "channels"), ("q5u", 5, "weights")):
        prec = Precision(bits, bits + 2, bits + 6, d.input_type)
        m = qcnn_from_network(net)
        assign_types(m, prec, d.X_train)
        if prune == "channels":
            prune_channels(m, channel_scores(m, d.X_train, d.y_train, d.task, board, "lut"), 4)
        elif prune == "weights":
            prune_weights(m, scores(m, d.X_train, d.y_train, d.task, "hardware"), 700)
        assign_types(m, prec, d.X_train)
        path = out / f"digits-cnn-{name}"
        shrink(network_from_qcnn(m, f"dcnn_{name}", {})).save(path)
        dirs.append(str(path))
    return dirs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="*", help="saved quantized CNNs (default: digits-cnn at four settings)")
    ap.add_argument("--board", default="pynq-z2")
    ap.add_argument("--datapath", default=None, help="kernel datapath of the emitters (default: theirs)")
    ap.add_argument("--out", default=None, help="default bench/results/conv_cost[_DATAPATH].json")
    args = ap.parse_args()
    args.out = args.out or str(ROOT / "bench" / "results" / f"conv_cost{'_' + args.datapath if args.datapath else ''}.json")
    if not args.dirs:
        import tempfile

        args.dirs = digits_cnn_designs(Path(tempfile.mkdtemp(prefix="conv-cost-")))
    rows = []
    for p in args.dirs:
        r = measure(p, args.board, args.datapath)
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "cells"}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
