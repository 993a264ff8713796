"""hls4ml 1.3's compressed dense (``Compression: True``), made to build.

A compressed layer stores only its nonzero weights, as (input, output, value) triples, and
multiplies them with ceil(nonzeros / reuse) multipliers (hls4ml's ``nnet_dense_compressed.h``).
In hls4ml 1.3 the pieces around that function do not fit together:

1. Vivado/Vitis: the dense config names ``{dense_function}`` as its kernel but sets it for no
   compressed layer, no kernel class calls ``dense_compressed``, and the config's
   ``strategy = nnet::compressed`` is missing from ``nnet_common.h``'s enum;
2. Quartus: its resource-strategy pass raises on a compressed Dense (it has nothing to
   transpose there);
3. both: ``dense_compressed`` passes the triple's struct type, not the weight's own, to
   ``product``, and the triple's index fields are written as ``uint<N>`` (the precision's Python
   ``str``), not the backend's C++ integer type.

We fix these through hls4ml's extension API and its layer config, touching none of its files.
The layer config names our kernel class (1) and marks the Quartus layer's weights as already
in place (2). A function template registered after hls4ml's own includes our headers
(``templates/``), calls ``dense_compressed`` through a config whose ``product`` takes the
weight's own type, and writes the triple with the C++ index type (3). Weights, loop,
accumulation and cast stay hls4ml's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).resolve().parent / "templates"
CONFIG_HEADER = TEMPLATES / "nnet_compressed_weight_config.h"
KERNEL_HEADER = TEMPLATES / "nnet_dense_compressed_kernel.h"  # Vivado/Vitis only
TEMPLATE_NAME = "codesign_compressed_dense_function_template"
HLS4ML_BACKENDS = ("Vivado", "Vitis", "Quartus")


def layer_config(backend: str, reuse: int) -> dict[str, Any]:
    """The hls4ml layer config of a compressed Dense at ``reuse`` for one of our backend names."""
    cfg: dict[str, Any] = {"Strategy": "Resource", "ReuseFactor": reuse, "Compression": True}
    if backend in ("vitis", "vivado"):
        cfg["DenseFunction"] = "nnet::DenseCompressed"  # the layer's ``dense_function`` (fix 1)
    else:
        cfg["_weights_transposed"] = True  # the Quartus resource pass then leaves the triples alone (fix 2)
    return cfg


def register_fixes() -> None:
    """Register our headers and function template with hls4ml's backends (once per process)."""
    from hls4ml.backends import get_backend
    from hls4ml.model.optimizer import get_available_passes

    for name in HLS4ML_BACKENDS:
        if f"{name.lower()}:{TEMPLATE_NAME}" in get_available_passes():
            continue
        backend = get_backend(name)
        xilinx = name != "Quartus"
        headers = [CONFIG_HEADER, KERNEL_HEADER] if xilinx else [CONFIG_HEADER]
        for h in headers:
            backend.register_source(h)
        backend.register_template(_template_class(xilinx, [f"nnet_utils/{h.name}" for h in headers]))


def _template_class(xilinx: bool, headers: list[str]) -> type:
    if xilinx:
        from hls4ml.backends.vivado.passes.core_templates import (
            DenseFunctionTemplate,
            dense_include_list,
        )
    else:
        from hls4ml.backends.quartus.passes.core_templates import (
            DenseFunctionTemplate,
            dense_include_list,
        )
    # Vivado/Vitis reach dense_compressed through nnet::dense and our kernel class; Quartus calls it directly
    call = None if xilinx else ("nnet::dense_compressed<{input_t}, {output_t}, nnet::compressed_weight_config<{config}>>"
                                "({input}, {output}, {w}, {b});")

    class CompressedDenseFunctionTemplate(DenseFunctionTemplate):
        """hls4ml's dense call for compressed layers, with our headers and the triple's C++ definition.

        Registered after hls4ml's own templates, so it runs after them and has the last word."""

        def __init__(self) -> None:
            super().__init__()
            self.name = TEMPLATE_NAME
            self.include_header = [*dense_include_list, *headers]
            if call:
                self.template = call

        def match(self, node: Any) -> bool:
            return super().match(node) and str(node.get_attr("strategy", "")).lower() == "compressed"

        def transform(self, model: Any, node: Any) -> bool:
            _define_triple_in_cpp(node.get_weights("weight").type)
            return super().transform(model, node)

    return CompressedDenseFunctionTemplate


def _define_triple_in_cpp(t: Any) -> None:
    """The triple's struct with the index precision's C++ spelling (fix 3)."""
    index = t.index_precision.definition_cpp()
    value = t.precision.definition_cpp()
    text = f"typedef struct {t.name} {{{index} row_index;{index} col_index;{value} weight; }} {t.name};\n"
    t.definition_cpp = lambda: text


def stored_triples(project_dir: str | Path, index: int) -> list[tuple[int, int, float]]:
    """The (input, output, value) triples hls4ml wrote for a compressed layer's ``w<index>.h``."""
    import re

    text = (Path(project_dir) / "firmware" / "weights" / f"w{index}.h").read_text()
    body = text[text.index("= {") + 2:] if "= {" in text else ""
    return [(int(r), int(c), float(v)) for r, c, v in re.findall(r"\{\s*(\d+),\s*(\d+),\s*([-+0-9.eE]+)\s*\}", body)]


def config_constants(project_dir: str | Path, index: int) -> dict[str, str]:
    """The ``static const`` values of layer ``index``'s config struct in ``parameters.h``."""
    import re

    text = (Path(project_dir) / "firmware" / "parameters.h").read_text()
    block = text[text.index(f"struct config{index} "):]
    block = block[: block.index("};")]
    return dict(re.findall(r"static const \w+ (\w+) = ([^;]+);", block))
