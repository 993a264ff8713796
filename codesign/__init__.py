"""fpga-codesign: put trained neural networks on FPGAs, verified bit for bit.

The front end: the IR (``Network`` and its layers), the exact integer reference,
importers, compression, the analytic cost model, boards, data sets and the CLI.
"""

from codesign.board import Board, board_names, load_board
from codesign.data import Dataset, load_dataset
from codesign.errors import CodesignError
from codesign.fixed import FixedType
from codesign.load import load
from codesign.network import Network

__version__ = "0.1.0"

__all__ = ["Board", "CodesignError", "Dataset", "FixedType", "Network", "board_names", "load", "load_board",
           "load_dataset", "__version__"]
