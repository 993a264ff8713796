"""Built-in models: ``digits-mlp``, ``digits-cnn`` and ``digits-resnet``, trained on first use in seconds and cached.

Both train on the built-in digits training split with a fixed seed and go through the PyTorch
importer, so they are ordinary imported networks. ``digits-cnn`` takes the 8x8 images as
``(8, 8, 1)`` (channels-last; ``data.shaped_for`` reshapes the flat digits samples) and is sized for
a small FPGA: 6 and 12 channels, about 1,200 weights (``DIGITS_CNN_CHANNELS``). ``digits-resnet`` is a
ResNet written the usual way (``DigitsResNet``: a stem conv with BatchNorm, an identity block, 2x2 max
pooling, a block with a 1x1-projection shortcut, global average pooling, a Linear head; about 1,300
weights), the graph case: its residual adds are ``Add`` layers.
"""

from __future__ import annotations

from typing import Any, Callable

from codesign.core.network import Network
from codesign.errors import ModelFileError
from codesign.tools import cache_dir

BUILTIN_MODELS = ("digits-mlp", "digits-cnn", "digits-resnet")
BUILTIN_DATA = {"digits-mlp": "digits", "digits-cnn": "digits", "digits-resnet": "digits"}  # the data set each built-in model was trained on
DIGITS_MLP_SIZES = (64, 32, 16, 10)
DIGITS_CNN_CHANNELS = (6, 12)  # conv1 3x3 'same' -> 2x2 max-pool -> conv2 3x3 'valid' -> 2x2x12 -> dense 10
DIGITS_RESNET_CHANNELS = (4, 8)  # stem and identity block at 4 channels, the projection block at 8
_CACHE_VERSION = 1


def _fit(model: Any, X: Any, y: Any, epochs: int, batch: int, lr: float, weight_decay: float, seed: int,
         one_cycle: bool = False) -> None:
    """Adam on shuffled mini-batches with a seeded order (optionally a one-cycle learning rate)."""
    import torch
    from torch import nn

    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(X) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps) if one_cycle else None
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), batch):
            b = perm[i : i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[b]), y[b]).backward()
            opt.step()
            if sched is not None:
                sched.step()
    model.eval()


def _named(net: Network, names: list[str], seed: int) -> Network:
    """Stable layer names (the reports and the other stages refer to them) and the built-in metadata."""
    net.layers[-1].head = "softmax"
    for layer, new in zip(net.layers, names):
        layer.name = new
    net.metadata.update({"source": "builtin", "data": "digits", "task": "classification", "seed": seed})
    return net


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
    _fit(model, torch.tensor(data.X_train, dtype=torch.float32), torch.tensor(data.y_train), epochs, 64, 3e-3, 1e-4,
         seed)
    net = network_from_module(model, name="digits-mlp")
    return _named(net, ["fc1", "relu1", "fc2", "relu2", "fc3", "output"], seed)


def train_digits_cnn(seed: int = 0, epochs: int = 30) -> Network:
    """conv 3x3 (6, 'same') -> ReLU -> max-pool 2x2 -> conv 3x3 (12, 'valid') -> ReLU -> flatten -> dense 10."""
    import torch
    from torch import nn

    from codesign.importers.data import load_digits_dataset
    from codesign.importers.torch_import import network_from_module

    data = load_digits_dataset(seed)
    torch.manual_seed(seed)
    c1, c2 = DIGITS_CNN_CHANNELS
    model = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(c1, c2, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(c2 * 2 * 2, 10))
    X = torch.tensor(data.X_train.reshape(-1, 1, 8, 8), dtype=torch.float32)  # torch's (N, C, H, W)
    threads = torch.get_num_threads()
    # Batches of 32 tiny images: one thread is fastest, and the same on every machine (on two loaded cores,
    # two threads took 295 s against 11 s with one). Restored after, as the caller had it.
    torch.set_num_threads(1)
    try:
        _fit(model, X, torch.tensor(data.y_train), epochs, 32, 1e-2, 1e-3, seed, one_cycle=True)
    finally:
        torch.set_num_threads(threads)
    net = network_from_module(model, name="digits-cnn", input_shape=(1, 8, 8))
    net.metadata["input_layout"] = "channels_last"  # (8, 8, 1): the flat digits pixels reshaped, row by row
    return _named(net, ["conv1", "relu1", "pool1", "conv2", "relu2", "flatten", "fc", "output"], seed)


def digits_resnet_module(channels: tuple[int, int] = DIGITS_RESNET_CHANNELS) -> Any:
    """The ``digits-resnet`` architecture as a torch module (``BasicBlock``s as torchvision writes them)."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.relu = nn.ReLU()
            self.shortcut = nn.Identity() if c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x: Any) -> Any:
            y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(y + self.shortcut(x))

    class DigitsResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c1, c2 = channels
            self.stem = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU())
            self.block1 = Block(c1, c1)
            self.pool = nn.MaxPool2d(2)
            self.block2 = Block(c1, c2)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(c2, 10)

        def forward(self, x: Any) -> Any:
            x = self.block2(self.pool(self.block1(self.stem(x))))
            return self.fc(self.gap(x).flatten(1))

    return DigitsResNet()


def train_digits_resnet(seed: int = 0, epochs: int = 40) -> Network:
    """``digits_resnet_module`` trained on the built-in digits training split (BatchNorm stays for compression to
    fold)."""
    import torch

    from codesign.importers.data import load_digits_dataset
    from codesign.importers.torch_import import network_from_module

    data = load_digits_dataset(seed)
    torch.manual_seed(seed)
    model = digits_resnet_module()
    X = torch.tensor(data.X_train.reshape(-1, 1, 8, 8), dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest and the same everywhere (see train_digits_cnn)
    try:
        _fit(model, X, torch.tensor(data.y_train), epochs, 32, 1e-2, 1e-4, seed, one_cycle=True)
    finally:
        torch.set_num_threads(threads)
    net = network_from_module(model, name="digits-resnet", input_shape=(1, 8, 8))
    net.metadata["input_layout"] = "channels_last"
    net.layers[-1].head = "softmax"
    net.metadata.update({"source": "builtin", "data": "digits", "task": "classification", "seed": seed})
    return net


_TRAINERS: dict[str, Callable[[int], Network]] = {"digits-mlp": train_digits_mlp, "digits-cnn": train_digits_cnn,
                                                  "digits-resnet": train_digits_resnet}


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
    net = _TRAINERS[name](seed)
    net.save(d)
    return net
