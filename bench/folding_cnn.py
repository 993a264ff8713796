"""The folded streaming CNN's sweep for ``bench/folding.py --cnn``: the README's digits CNN folded at several R.

The network is the README's CNN flow's: ``codesign compress digits-cnn --data digits --board pynq-z2 --budget
lut=0.02,dsp=0`` (3-bit weights, 6-bit activations, 316 nonzero weights: conv 3x3 1->5 and 5->9, Dense 36->10),
stored in ``tests/models/folded_digits_cnn``. Its own fold is set aside: each row folds it as the budget
search does at a target II of ``64 * R`` cycles per image (``fold_choice.reuse_at``: each convolution at
``min(R, its nonzeros)``, the Dense tail at ``min(64 R, its nonzeros)``), from ``R = 1`` (only the Dense tail folded,
one pixel a cycle) to the convolutions' full-kernel fold (one MAC unit each), plus the fully parallel design.

Each row is emitted as the flow's RTL step emits it for the PYNQ-Z2 (``DatapathChoice.for_board``: pipelined for
100 MHz), co-simulated in Verilator (bulk harness) against the reference, and synthesized stage by stage as the
flow judges a streaming CNN (``synthesize_layer_modes``, ``synth_xilinx -family xc7``, with and without DSP
inference); the cost model (``conv_cost``, folded kernels by ``fold_cost``) prices the same design beside it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # the repository on sys.path

BOARD = "pynq-z2"
CNN_REUSE = (1, 2, 4, 8, 16, 38, 74, 148)  # per pixel: 38 = conv1's nonzeros, 148 = conv2's (the full-kernel fold)
CNN_SAMPLES = 200
STORED = _common.ROOT / "tests" / "models" / "folded_digits_cnn"
COMPRESS = ["compress", "digits-cnn", "--data", "digits", "--board", BOARD, "--budget", "lut=0.02,dsp=0"]


def cnn_network():
    """The README's CNN flow's compressed digits-cnn as stored in ``tests/models/folded_digits_cnn`` (the search may
    return another network later; ``bench/folding.py --cnn-compress`` makes it again), its own reuse factors set to 1."""
    from codesign.compress.fold_choice import reuse_at, with_reuse
    from codesign.core.network import Network

    return with_reuse(Network.load(STORED), reuse_at(Network.load(STORED), 1))


def compress_again(out: Path = STORED) -> None:
    """The README's CNN flow's compression, saved into ``out``."""
    from codesign.app.cli import main

    if main([*COMPRESS, "--out", str(out), "--force", "--quiet"]) != 0:
        sys.exit("compressing digits-cnn failed")


def measure_cnn(net, r: int | None, dsp_modes: tuple[bool, ...], q, work: Path) -> dict[str, Any]:
    """One row: ``r`` per pixel (None: fully parallel), its fold, co-simulation, per-stage Yosys counts per DSP mode
    and the model's price of the same design."""
    import numpy as np

    from codesign.board import load_board
    from codesign.compress.fold_choice import designed_ii, pixels, reuse_at, with_reuse
    from codesign.core.layers import Conv, Dense
    from rtl_sim.choice import DatapathChoice
    from rtl_sim.cosim import cosimulate, write_rtl
    from rtl_sim.synth import synthesize_layer_modes, total_counts

    board = load_board(BOARD)
    choice = DatapathChoice.for_board(board.synth_family, board.clock_mhz)
    target = 1 if r is None else pixels(net) * r
    folded = with_reuse(net, reuse_at(net, target))
    d = write_rtl(folded, work / "rtl", **choice.emit_kwargs())
    res = cosimulate(folded, work / "rtl", work / "sim", q)
    row: dict[str, Any] = {
        "network": "digits-cnn", "reuse_per_pixel": r, "target_ii": target, "ii": d.cycles_per_image,
        "designed_ii": designed_ii(folded), "latency": d.latency, "cycles_per_pixel": d.cycles_per_pixel,
        "reuse": {l.name: int(l.reuse) for l in folded.layers if isinstance(l, (Conv, Dense))},
        "nonzero": {l.name: int(np.count_nonzero(l.weight)) for l in folded.layers if isinstance(l, (Conv, Dense))},
        "folds": getattr(d, "folds", {}) or {},
        "cosim": {"samples": res.samples, "mismatches": res.mismatches, "bit_exact": res.bit_exact,
                  "measured_ii": res.ii, "measured_latency": res.latency_cycles}}
    for dsp in dsp_modes:
        t0 = time.perf_counter()
        stages = synthesize_layer_modes(folded, board.synth_family, (dsp,), choice=choice)[dsp]
        tot = total_counts(stages)
        row["dsp" if dsp else "nodsp"] = {
            **{k: tot[k] for k in ("lut", "ff", "dsp", "carry", "bram")},
            "stages": {n: {k: s[k] for k in ("lut", "ff", "dsp", "bram")} for n, s in stages.items()},
            "yosys_s": round(time.perf_counter() - t0, 1), **price(folded, dsp)}
        print("digits-cnn", r, "dsp" if dsp else "nodsp", {k: row["dsp" if dsp else "nodsp"][k]
                                                           for k in ("lut", "ff", "dsp", "bram", "model")}, flush=True)
    return row


def price(folded, dsp: bool) -> dict[str, Any]:
    """The cost model's price of the design as the row builds it: in total and per layer."""
    from codesign.board import load_board
    from codesign.compress.cost import network_cost, total_cost
    from rtl_sim.choice import DatapathChoice

    board = load_board(BOARD)
    choice = DatapathChoice.for_board(board.synth_family, board.clock_mhz)
    layers = network_cost(folded, board, None if dsp else "lut", regs_every=choice.adder_regs_every,
                          clock_mhz=choice.clock_mhz or 0, datapath=choice.datapath)
    tot = total_cost(layers)
    return {"model": {k: tot[k] for k in ("lut", "ff", "dsp", "bram")},
            "model_layers": {n: {k: round(getattr(c, k), 1) for k in ("lut", "ff", "dsp", "bram")}
                             for n, c in layers.items()}}


def reprice(res: dict[str, Any]) -> dict[str, Any]:
    """The stored rows priced again by the cost model as it is now (the Yosys counts and co-simulation kept)."""
    from codesign.compress.fold_choice import pixels, reuse_at, with_reuse

    net = cnn_network()
    for row in res["rows"]:
        r = row["reuse_per_pixel"]
        folded = with_reuse(net, reuse_at(net, 1 if r is None else pixels(net) * r))
        for mode in ("nodsp", "dsp"):
            if mode in row:
                row[mode].update(price(folded, mode == "dsp"))
    return res


def cnn_sweep(reuse: tuple[int, ...], dsp_modes: tuple[bool, ...]) -> dict[str, Any]:
    """The CNN's rows (the fully parallel design first) and what they were measured on."""
    from codesign.core.verify import verification_inputs
    from codesign.importers.data import load_digits_dataset, shaped_for

    net = cnn_network()
    data = shaped_for(load_digits_dataset(), net.input_shape)
    q = verification_inputs(net, data.X_test, CNN_SAMPLES)
    rows = []
    with tempfile.TemporaryDirectory(prefix="folding-cnn-") as tmp:
        for r in (None, *reuse):
            rows.append(measure_cnn(net, r, dsp_modes, q, Path(tmp) / f"r{r}"))
    return {"network": "digits-cnn: " + " ".join(COMPRESS[1:]) + " (the README's CNN flow)", "board": BOARD,
            "family": "xc7", "samples": len(q), "rows": rows}
