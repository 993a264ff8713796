"""Compression under a resource budget: the analytic cost model and its calibration layers,
post-training quantization, quantization-aware training, pruning and the budget search (``search``)."""


def __getattr__(name: str):
    # ``codesign.compress.compress`` is the search; imported on first use because it pulls in torch.
    if name == "compress":
        from codesign.compress.search import compress

        return compress
    raise AttributeError(f"module 'codesign.compress' has no attribute {name!r}")
