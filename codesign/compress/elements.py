"""What HGQ's per-element formats change in the price of a layer: an element of width 0 is the constant 0, so
the weights that read it build nothing (the RTL emitter drops those terms, hls4ml's fused cast feeds a 0).

``constant_rows`` follows such elements from each per-element ``Quant`` through the layers that keep a zero a
zero (ReLU, a cast, Flatten, MaxPool where a channel is zero everywhere) to the Dense or convolution that reads
them; ``without_rows`` is that layer as it is priced. The other elements are priced at the tensor's envelope
type, which holds every element's format (the exact width of each element's own wire is the RTL's, not the
cost model's).
"""

from __future__ import annotations

import copy

import numpy as np

from codesign.core.layers import Conv, Dense, Flatten, MaxPool, Quant, ReLU
from codesign.core.network import INPUT, Network


def constant_rows(net: Network) -> dict[str, np.ndarray]:
    """For each Dense/Conv reading a per-element quantizer's width-0 elements: which rows of its (kernel) weight
    matrix read a constant 0 (a Conv's rows in ``kernel_dense`` order: taps, then channels)."""
    zero: dict[str, np.ndarray | None] = {INPUT: None}  # per tensor, its elements that are always 0
    sources = net.sources()
    out: dict[str, np.ndarray] = {}
    for layer, shape in zip(net.layers, net.shapes()):
        z = zero.get(sources[layer.name][0])
        if isinstance(layer, Quant) and layer.per_element:
            z = (layer.element_width == 0) | (False if z is None else z)
        elif isinstance(layer, Flatten) and z is not None:
            z = z.reshape(-1)
        elif isinstance(layer, MaxPool) and z is not None:
            z = np.broadcast_to(z.reshape(-1, z.shape[-1]).all(axis=0), shape)
        elif isinstance(layer, Dense) and z is not None:
            out[layer.name], z = z.reshape(-1), None
        elif isinstance(layer, Conv) and z is not None:
            channels = z.reshape(-1, z.shape[-1]).all(axis=0)
            out[layer.name], z = np.tile(channels, int(np.prod(layer.kernel))), None
        elif not isinstance(layer, (ReLU, Quant)):
            z = None
        zero[layer.name] = z
    return {k: v for k, v in out.items() if v.any()}


def without_rows(layer: Dense, rows: np.ndarray | None) -> Dense:
    """``layer`` with the weights of ``rows`` (inputs that are constant 0) removed, as the hardware has it."""
    if rows is None or not rows.any():
        return layer
    d = copy.copy(layer)
    d.weight = np.where(rows[:, None], 0, layer.weight).astype(layer.weight.dtype)
    d.mask = layer.mask & ~rows[:, None]
    return d
