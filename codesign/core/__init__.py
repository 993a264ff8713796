"""The core: the IR (fixed-point types, layers, ``Network``), the exact integer reference, verification
vectors and the one comparison with the reference, and the arithmetic the backends share.

The core imports no other part of the toolkit (only ``codesign.errors``)."""
