"""A BatchNorm MLP trained the way a PyTorch user would, with no code from this repository.

64-48-24-10 with BatchNorm1d after each hidden Linear, on scikit-learn's 8x8 digits, Adam with a
cosine schedule, exported with ``torch.export`` to ``bn_mlp_digits.pt2`` (a file the toolkit opens
without running code from it). It stands for a network brought from elsewhere: issue 33's
"third-party-style case", which ``bench/third_party_bn.py`` compresses at 20 % and 10 % of a PYNQ-Z2.

The test split is the toolkit's fixed one (the 360 images of a fixed permutation), so that the float
accuracy printed here is the one the flow reports; nothing else is shared.

    python tests/models/make_bn_mlp_digits.py [--out tests/models/bn_mlp_digits.pt2] [--seed 7]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = load_digits()
    X, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    idx = np.random.default_rng(12345).permutation(len(X))
    return X[idx[360:]], y[idx[360:]], X[idx[:360]], y[idx[:360]]


def bn_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 48), nn.BatchNorm1d(48), nn.ReLU(),
        nn.Linear(48, 24), nn.BatchNorm1d(24), nn.ReLU(),
        nn.Linear(24, 10))


def train(seed: int, epochs: int = 120) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    Xtr, ytr, Xte, yte = (torch.from_numpy(a) for a in digits_split())
    model = bn_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(Xtr)).split(64):
            opt.zero_grad()
            loss_fn(model(Xtr[b]), ytr[b]).backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(Xte).argmax(1) == yte).float().mean().item()
    return model, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("bn_mlp_digits.pt2"))
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, acc = train(args.seed)
    torch.export.save(torch.export.export(model, (torch.zeros(2, 64),)), str(args.out))
    print(f"{args.out}: float test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
