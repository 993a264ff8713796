"""Pruning whole units: the neurons of a Dense layer and the channels (filters) of a convolution; and the shrink.

Removing output unit ``j`` of a weighted layer removes its weights (a filter), its bias, and
everything the next weighted layer reads of it (input channel ``j`` of the next convolution,
the rows Flatten makes of channel ``j`` in the Dense after it, or row ``j`` of the next Dense);
units tied by merges go together (``qcnn.unit_groups``). ``shrink`` then removes the unit from
the exported network for real, so the datapath, the line buffers and the window registers of
the next layer all lose it.

A unit's hardware-aware score is its measured importance (how much the loss rises without it, on
training samples, which compares across layers: a first-layer channel feeds everything after it)
per LUT the cost model saves when it goes (priced on the exported network, with and without it).
Single weights are ``prune``'s.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.nn import functional as F

from codesign.board import Board
from codesign.compress.conv_cost import kernel_dense, live_outputs
from codesign.compress.cost import total_cost
from codesign.compress.qcnn import QCNN, QConv, consumers, network_from_qcnn, unit_groups, unit_rows
from codesign.core.layers import Conv, ReLU, Weighted
from codesign.core.network import Network
from codesign.core.reference import exact_accum_type


def alive_units(model: QCNN) -> list[np.ndarray]:
    """Per weighted stage: which output units (channels / neurons) still have a weight."""
    return [s.mask.numpy().reshape(-1, s.mask.shape[-1]).any(axis=0) for s in model.weighted()]


def remove_unit(model: QCNN, k: int, j: int) -> None:
    """Structured pruning of unit ``j`` of weighted stage ``k``: its filter, its bias, and what the next
    weighted stage reads of it."""
    stages = model.weighted()
    if not model.is_chain:
        group = next((g for g in unit_groups(model).values() if (k, j) in g.producers), None)
        if group is None:  # tied to the input or to the output: not prunable
            return
        with torch.no_grad():
            for p, ch in group.producers:
                stages[p].mask[..., ch] = 0.0
                stages[p].bias_mask[ch] = 0.0
            for r, index in group.readers:
                if isinstance(stages[r], QConv):
                    stages[r].mask[..., index, :] = 0.0
                else:
                    stages[r].mask[index, :] = 0.0
        return
    c = consumers(model)[k]
    a, b = stages[k], stages[c.next_stage]
    with torch.no_grad():
        a.mask[..., j] = 0.0
        a.bias_mask[j] = 0.0
        rows = unit_rows(c, a.weight.shape[-1], j)
        if c.conv_input:
            b.mask[..., rows, :] = 0.0
        else:
            b.mask[rows, :] = 0.0


def prunable_units(model: QCNN) -> list[tuple[int, int]]:
    """``(stage, unit)`` of every unit structured pruning may remove: each output channel of every weighted stage
    but the last in a chain; in a graph, one per group of channels tied by merges (``qcnn.unit_groups``)."""
    if not model.is_chain:
        return sorted(unit_groups(model))
    return [(c.stage, int(j)) for c in consumers(model) for j in range(model.weighted()[c.stage].weight.shape[-1])]


CALIB_SAMPLES = 512  # training samples the measured importance of a channel is taken on


def _loss(model: QCNN, x: torch.Tensor, y: torch.Tensor, task: str) -> float:
    with torch.no_grad():
        out = model(x)
        if task == "classification":
            return float(F.cross_entropy(out, y))
        return float(F.mse_loss(out, y.to(out.dtype).reshape(out.shape)))


def channel_scores(model: QCNN, X: np.ndarray, y: np.ndarray, task: str, board: Board, mapping: str,
                   hardware: bool = True, dsp_price: float = 50.0, min_width: int = 1) -> list[tuple[float, int, int]]:
    """``(score, stage, unit)`` of every prunable unit, lowest first. A unit's importance is measured: how
    much the loss on ``CALIB_SAMPLES`` training samples rises when it is removed (in loss units, so a
    first-layer channel, which feeds everything after it, compares with a last-layer one; a first-order
    estimate underrated first-layer channels). With ``hardware`` (and a quantized model) it is divided
    by the LUTs (and DSPs at ``dsp_price``) the cost model saves without it, on the exported network."""
    x = torch.tensor(np.asarray(X[:CALIB_SAMPLES], dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y[:CALIB_SAMPLES]))
    base_loss = _loss(model, x, yt, task)
    alive = alive_units(model)
    hardware = hardware and model.quantized
    if hardware:
        base = total_cost(_costs(shrink(network_from_qcnn(model, "c", {})), board, mapping))
    out = []
    for k, j in prunable_units(model):
        if alive[k].sum() <= min_width or not alive[k][j]:
            continue
        trial = copy.deepcopy(model)
        remove_unit(trial, k, int(j))
        imp = max(_loss(trial, x, yt, task) - base_loss, 0.0)
        saved = 1.0
        if hardware:
            cost = total_cost(_costs(shrink(network_from_qcnn(trial, "c", {})), board, mapping))
            saved = max((base["lut"] - cost["lut"]) + dsp_price * (base["dsp"] - cost["dsp"]), 1.0)
        out.append((imp / saved, -saved, k, int(j)))  # of equal scores, the costlier goes first
    out.sort()
    return [(sc, k, j) for sc, _, k, j in out]


def _costs(net: Network, board: Board, mapping: str):
    from codesign.compress.cost import network_cost

    return network_cost(net, board, mapping)


def prune_channels(model: QCNN, ranked: list[tuple[float, int, int]], n: int, min_width: int = 1) -> int:
    """Remove the first ``n`` units of ``ranked`` (``channel_scores``' order) that leave every layer at
    least ``min_width`` units. Returns how many were removed."""
    if n <= 0:
        return 0
    width = {k: int(a.sum()) for k, a in enumerate(alive_units(model))}
    done = 0
    for _, k, j in ranked:
        if done >= n:
            break
        if width[k] <= min_width:
            continue
        remove_unit(model, k, j)
        width[k] -= 1
        done += 1
    return done


def shrink(net: Network) -> Network:
    """Drop the units (channels, neurons) that can no longer affect the output: no weights and no bias,
    or before a ReLU never above zero for any input (their value is exactly 0), or nothing reads them. The next layer loses the matching inputs, and
    accumulator types are recomputed exactly (the outputs are unchanged, bit for bit). A network with branches
    is returned as it is: its units are tied across merges, and the cost model already prices dead units as
    constants."""
    if not net.is_chain:
        return net
    layers = copy.deepcopy(net.layers)
    idx = [i for i, l in enumerate(layers) if isinstance(l, Weighted)]
    types = net.tensor_types()
    for a_i, b_i in zip(idx, idx[1:]):
        a, b = layers[a_i], layers[b_i]
        units = a.weight.shape[-1]
        wa = a.weight.reshape(-1, units)
        dead_in = ~wa.any(axis=0) & (a.bias == 0)
        t_a = net.input_type if a_i == 0 else types[a_i - 1]
        if t_a is not None and a_i + 1 < len(layers) and isinstance(layers[a_i + 1], ReLU):
            # never above zero for any input of its type: exactly 0 after the ReLU
            dead_in |= ~live_outputs(kernel_dense(a) if isinstance(a, Conv) else a, t_a, True)
        if isinstance(b, Conv):
            unused = ~np.moveaxis(b.weight, -2, 0).reshape(units, -1).any(axis=1)
        else:
            group = b.weight.shape[0] // units
            unused = ~b.weight.reshape(group, units, -1).any(axis=(0, 2))
        keep = ~(dead_in | unused)
        if keep.all() or not keep.any():
            continue
        a.weight, a.mask, a.bias = a.weight[..., keep], a.mask[..., keep], a.bias[keep]
        if isinstance(b, Conv):
            b.weight, b.mask = b.weight[..., keep, :], b.mask[..., keep, :]
        else:
            out = b.weight.shape[1]
            b.weight = b.weight.reshape(group, units, out)[:, keep, :].reshape(-1, out)
            b.mask = b.mask.reshape(group, units, out)[:, keep, :].reshape(-1, out)
    out = Network(net.name, net.input_shape, layers, net.input_type, net.metadata)
    if out.input_type is None:
        return out
    t = out.input_type
    for i, layer in enumerate(out.layers):
        if isinstance(layer, Weighted):
            layer.accum_type = exact_accum_type(layer, t)
        t = out.tensor_types()[i] or t
    return out


def channel_report(net: Network, original: Network | None = None) -> list[dict]:
    """Per weighted layer (plain data for the report): units kept and pruned (against ``original``, or
    as the search recorded them in ``net.metadata["channels"]``), kernel sparsity, the nonzero weights
    of each output's filter and, for a convolution, per kernel tap and input channel."""
    if original is not None:
        before = {l.name: l.weight.shape[-1] for l in original.weighted_layers()}
    else:
        recorded = net.metadata.get("channels", {})
        before = {l.name: l.weight.shape[-1] + int(recorded.get(l.name, {}).get("pruned", 0))
                  for l in net.weighted_layers()}
    rows = []
    for layer in net.weighted_layers():
        units = layer.weight.shape[-1]
        w = layer.weight.reshape(-1, units)
        kept = int((w.any(axis=0) | (layer.bias != 0)).sum())  # a graph's pruned channels stay as zero filters
        entry = {"name": layer.name, "kind": layer.kind, "units": "channels" if isinstance(layer, Conv) else "neurons",
                 "kept": kept, "pruned": int(before.get(layer.name, units) - kept),
                 "weights": int(w.size), "nonzero": int(np.count_nonzero(w)),
                 "sparsity": round(float(1.0 - np.count_nonzero(w) / max(w.size, 1)), 4),
                 "nonzero_per_output": [int(v) for v in np.count_nonzero(w, axis=0)]}
        if isinstance(layer, Conv):
            entry["kernel"] = list(layer.kernel)
            # the kernel-sparsity picture: nonzero count per (kernel position, input channel) over outputs
            entry["nonzero_per_tap"] = np.count_nonzero(layer.weight, axis=-1).tolist()
        rows.append(entry)
    return rows
