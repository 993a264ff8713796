"""Built-in models: ``digits-mlp``, trained on first use in seconds and cached on disk."""

from __future__ import annotations

from codesign.core.network import Network
from codesign.errors import ModelFileError
from codesign.tools import cache_dir

BUILTIN_MODELS = ("digits-mlp",)
DIGITS_MLP_SIZES = (64, 32, 16, 10)
_CACHE_VERSION = 1


def train_digits_mlp(seed: int = 0, epochs: int = 120) -> Network:
    """A 64-32-16-10 ReLU MLP trained on the built-in digits training split."""
    import torch
    from torch import nn

    from codesign.importers.data import load_digits_dataset
    from codesign.importers.torch_import import network_from_module

    data = load_digits_dataset(seed)
    torch.manual_seed(seed)
    sizes = DIGITS_MLP_SIZES
    mods: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    model = nn.Sequential(*mods)
    X = torch.tensor(data.X_train, dtype=torch.float32)
    y = torch.tensor(data.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[b]), y[b]).backward()
            opt.step()
    net = network_from_module(model, name="digits-mlp")
    net.layers[-1].head = "softmax"
    for layer, new in zip(net.weighted_layers(), ("fc1", "fc2", "fc3")):
        layer.name = new
    relus = [l for l in net.layers if l.kind == "ReLU"]
    for i, layer in enumerate(relus):
        layer.name = f"relu{i + 1}"
    net.metadata.update({"source": "builtin", "data": "digits", "task": "classification", "seed": seed})
    return net


def builtin_model(name: str, seed: int = 0) -> Network:
    """A built-in model by name, from the cache when it was trained before."""
    if name not in BUILTIN_MODELS:
        raise ModelFileError(f"unknown built-in model {name!r}; built-in models: {', '.join(BUILTIN_MODELS)}")
    d = cache_dir() / f"{name}-v{_CACHE_VERSION}-seed{seed}"
    if (d / "network.json").is_file():
        try:
            return Network.load(d)
        except Exception:  # a damaged cache entry is retrained, not fatal
            pass
    net = train_digits_mlp(seed)
    net.save(d)
    return net
