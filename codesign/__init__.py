"""fpga-codesign: put trained neural networks on FPGAs, verified bit for bit.

The public API. The parts live in sub-packages (docs/architecture.md): ``core`` (the IR and
the exact reference), ``importers``, ``compress``, ``app``; the backends are ``hls`` and ``rtl_sim``.
"""

from codesign.board import Board, board_names, load_board
from codesign.budget import Budget
from codesign.core.fixed import FixedType
from codesign.core.network import Network
from codesign.errors import CodesignError
from codesign.importers.data import Dataset, load_dataset
from codesign.importers.load import load

__version__ = "0.1.0"

# The pipeline, mirroring the CLI for notebooks; imported on first use because they pull in torch.
_LAZY = {
    "compress_network": ("codesign.app.flow", "compress_network"),
    "run_flow": ("codesign.app.flow", "run_flow"),
    "FlowOptions": ("codesign.app.flow", "FlowOptions"),
    "run_sweep": ("codesign.app.sweep", "run_sweep"),
    "SweepOptions": ("codesign.app.sweep", "SweepOptions"),
    "step_compress": ("codesign.app.flow", "step_compress"),
    "step_hls": ("codesign.app.flow", "step_hls"),
    "step_rtl": ("codesign.app.flow", "step_rtl"),
    "step_cosim": ("codesign.app.flow", "step_cosim"),
    "step_estimate": ("codesign.app.flow", "step_estimate"),
    "write_report": ("codesign.app.report", "write_report"),
    "Artifact": ("codesign.app.artifact", "Artifact"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'codesign' has no attribute {name!r}")


__all__ = ["Board", "Budget", "CodesignError", "Dataset", "FixedType", "Network", "board_names", "load", "load_board",
           "load_dataset", "__version__", *_LAZY]
