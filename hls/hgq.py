"""HGQ's per-element quantizers (``Quant`` with per-element formats) as layers of the hls4ml project.

hls4ml 1.3 reads HGQ proxy models through its own converter, which turns a heterogeneous
``FixedPointQuantizer`` into a layer of that name whose generated function casts element j with
``ap_(u)fixed<b_j, i_j, AP_<RND>, AP_<SAT>>(inp[j])`` (``hls4ml/backends/fpga/passes/hgq_proxy_model.py``,
``generate_mask_fn``), for ``io_parallel`` only: its pass raises ``NotImplementedError`` on ``io_stream``.
Our projects come from the IR through hls4ml's PyTorch converter, so a per-element Quant becomes a leaf
module (``ElementQuant``) whose registered handler gives:

- ``io_parallel`` (MLPs): hls4ml's own ``FixedPointQuantizer`` layer with the formats as its ``mask_kbi``, so
  hls4ml generates the casts exactly as it does for an HGQ proxy;
- ``io_stream`` (CNNs): ``CodesignElementQuant``, registered here through hls4ml's extension API (a layer, a
  function-call template and generated code in ``nnet_code_gen.h``): per pixel, each channel cast to its
  format with the same ``ap_fixed`` cast; where the formats change from pixel to pixel (an input quantizer)
  a table gives each pixel's format of each channel.

In both, the cast result is held in the IR's envelope ``result_type`` (which holds every element's format), and
hls4ml's bit-exact pass, which would re-derive every precision, is turned off (``BitExact: False``) so the
project keeps the IR's types. Vitis/Vivado only (the ``ap_fixed`` casts); Quartus/oneAPI are refused.

This module depends only on the IR: it never imports ``rtl_sim``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from codesign.core.layers import Quant
from codesign.errors import BackendError

STREAM_LAYER = "CodesignElementQuant"
MODULE = "ElementQuant"  # the torch module's class name, the converter's key
BACKENDS = ("vitis", "vivado")
_registered: list[bool] = []


def check_backend(layer: Quant, backend: str) -> None:
    if backend not in BACKENDS:
        raise BackendError(f"layer {layer.name!r}: per-element quantizer formats (HGQ) are built with ap_fixed casts "
                           f"on Vitis/Vivado; {backend} is not wired; use --backend vitis")


def kbi(layer: Quant) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hls4ml's (keep_negative, bits, integers) of each element, in the tensor's shape (channels last)."""
    return (layer.element_signed.astype(np.int64), layer.element_width.astype(np.int64),
            np.where(layer.element_width > 0, layer.element_integer, 0).astype(np.int64))


def element_quant_modules(layer: Quant, *_: Any) -> list[tuple[str, Any]]:
    """The torch leaf module hls4ml's converter maps to the per-element cast layer."""
    register()
    return [(layer.name, _module_class()(layer))]


def precisions(layer: Quant) -> dict[str, str]:
    return {"result": layer.result_type.to_hls()}


def _module_class() -> type:
    from hls4ml.utils.torch import HLS4MLModule

    if "cls" not in _CACHE:
        class ElementQuant(HLS4MLModule):
            """Identity for the tracer; carries the IR layer's formats to the converter's handler."""

            def __init__(self, layer: Quant) -> None:
                super().__init__()
                self.k, self.b, self.i = kbi(layer)
                self.rnd, self.sat = layer.result_type.quant, layer.result_type.overflow

            def forward(self, x: Any) -> Any:
                return x

        _CACHE["cls"] = ElementQuant
    return _CACHE["cls"]


_CACHE: dict[str, Any] = {}


def _handler(operation: str, layer_name: str, input_names: list[str], input_shapes: list[Any], node: Any,
             class_object: Any, data_reader: Any, config: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    m = class_object
    layer: dict[str, Any] = {"name": layer_name, "inputs": input_names, "RND": m.rnd, "SAT": m.sat,
                             "overrides": {}, "fusible": False}
    if config.get("IOType") == "io_stream":
        layer.update(class_name=STREAM_LAYER, kbi=(m.k, m.b, m.i))
    else:
        layer.update(class_name="FixedPointQuantizer", mask_kbi=(m.k[None], m.b[None], m.i[None]))
    return layer, list(input_shapes[0])


def stream_function(name: str, k: np.ndarray, b: np.ndarray, i: np.ndarray, rnd: str, sat: str) -> str:
    """The io_stream cast: pixel by pixel, channel c to its format (or to the pixel's, from a table)."""
    c = k.shape[-1]
    fmts = np.stack([k, b, i], axis=-1).reshape(-1, c, 3)  # (pixels, channels, kbi)
    n_pix = fmts.shape[0]

    def cast(f: np.ndarray, j: int) -> str:
        kk, bb, ii = (int(v) for v in f)
        if bb == 0:
            return f"out_data[{j}] = 0;"
        u = "" if kk else "u"
        return f"out_data[{j}] = ap_{u}fixed<{bb},{ii},AP_{rnd},AP_{sat}>(in_data[{j}]);"

    tables, body = [], []
    for j in range(c):
        col = fmts[:, j, :]
        distinct = np.unique(col, axis=0)
        if len(distinct) == 1:
            body.append(f"        {cast(distinct[0], j)}")
            continue
        index = {tuple(f): n for n, f in enumerate(distinct)}
        rows = ", ".join(str(index[tuple(f)]) for f in col)
        tables.append(f"    static const unsigned char fmt{j}[{n_pix}] = {{{rows}}};")
        cases = " ".join(f"case {n}: {cast(f, j)} break;" for n, f in enumerate(distinct))
        body.append(f"        switch (fmt{j}[p]) {{ {cases} }}")
    newline = "\n"
    return f"""
template <class data_T, class res_T> void {name}(hls::stream<data_T> &data, hls::stream<res_T> &res) {{
{newline.join(tables)}
{name}_loop:
    for (int p = 0; p < {n_pix}; p++) {{
        #pragma HLS PIPELINE
        data_T in_data = data.read();
        res_T out_data;
        PRAGMA_DATA_PACK(out_data)
{newline.join(body)}
        res.write(out_data);
    }}
}}
"""


def register() -> None:
    """Register the converter's handler, the io_stream layer and its template with hls4ml (once)."""
    if _registered:
        return
    import hls4ml
    from hls4ml.backends.template import FunctionCallTemplate
    from hls4ml.converters.pytorch_to_hls import register_pytorch_layer_handler
    from hls4ml.model.layers import Layer, register_layer
    from hls4ml.model.types import Source

    class CodesignElementQuant(Layer):
        def initialize(self) -> None:
            inp = self.get_input_variable()
            self.add_output_variable(inp.shape)
            self.set_attr("n_in", inp.size())
            k, b, i = self.attributes["kbi"]
            code = stream_function(f"{self.name}_cast", k, b, i, self.attributes["RND"], self.attributes["SAT"])
            self.set_attr("element_quant_codegen", Source(code))

    class CodesignElementQuantCall(FunctionCallTemplate):
        def __init__(self) -> None:
            super().__init__(CodesignElementQuant, include_header=[])

        def format(self, node: Any) -> str:
            p = self._default_function_params(node)
            return f"nnet::{node.name}_cast<{p['input_t']}, {p['output_t']}>({p['input']}, {p['output']});"

    register_pytorch_layer_handler(MODULE, _handler)
    register_layer(STREAM_LAYER, CodesignElementQuant)
    for backend in ("Vivado", "Vitis"):
        hls4ml.backends.get_backend(backend).register_template(CodesignElementQuantCall)
    _registered.append(True)
