"""Writes ``KERAS_dense_16x100x100x100x100x100x5_distilled_weights.h5``: hls4ml's 16-100^5-5 MLP with live weights.

hls4ml's own weights for ``KERAS_dense_16x100x100x100x100x100x5.json`` do not compute anything: the model was
trained with an L1 penalty of 0.01 on every hidden kernel, which drove all 40,000 hidden weights below 1.7e-6,
so its float64 output is one value for every input (the argmax is class 0 for all of them), and any faithful
hardware of it is a constant. This file has the same layers, names and shapes (load it with hls4ml's .json
and ``--weights``), trained by us: the network is distilled from hls4ml's jet tagger ``KERAS_3layer`` (trained
on the jet data) on random N(0, 1) inputs, the 16 standardized jet features' scale, as ``bench/quality.py``'s
``jet_data`` labels them. torch, Adam, cross-entropy on the teacher's softmax, 30 epochs over 60,000 inputs,
seed 0; agreement with the teacher's argmax on 10,000 held-out inputs is printed. The file is committed; this
script documents it and rebuilds it (``python tests/models/make_dense_distilled.py``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SRC = HERE / "KERAS_dense_16x100x100x100x100x100x5_weights.h5"
OUT = HERE / "KERAS_dense_16x100x100x100x100x100x5_distilled_weights.h5"
LAYERS = ["fc1_relu", "fc2_relu", "fc3_relu", "fc4_relu", "fc5_relu", "output_softmax"]


def teacher_softmax(X: np.ndarray) -> np.ndarray:
    sys.path.insert(0, str(HERE.parents[1]))
    import codesign

    t = codesign.load(HERE / "KERAS_3layer.json")
    z = np.asarray(t.forward(X))  # the logits: the importer keeps the Output layer's softmax out of forward
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def train(X: np.ndarray, P: np.ndarray, epochs: int = 30, seed: int = 0) -> list:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # a shared machine
    sizes = [16, 100, 100, 100, 100, 100, 5]
    lin = [torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
    mods: list = []
    for i, l in enumerate(lin):
        mods += [l] + ([torch.nn.ReLU()] if i < len(lin) - 1 else [])
    model = torch.nn.Sequential(*mods)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    Xt, Pt = torch.tensor(X, dtype=torch.float32), torch.tensor(P, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), generator=g).split(256):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(Xt[idx]), Pt[idx])
            loss.backward()
            opt.step()
    return [(l.weight.detach().numpy().T.copy(), l.bias.detach().numpy().copy()) for l in lin]


def main() -> None:
    import h5py

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1.0, size=(70000, 16))
    P = teacher_softmax(X)
    params = train(X[:60000], P[:60000])
    shutil.copyfile(SRC, OUT)  # hls4ml's file layout (Keras 2.1.5 save_weights), its arrays replaced
    with h5py.File(OUT, "r+") as f:
        for name, (w, b) in zip(LAYERS, params):
            f[name][name]["kernel:0"][...] = w.astype(np.float32)
            f[name][name]["bias:0"][...] = b.astype(np.float32)
    h = X[60000:]
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        h = np.maximum(h, 0) if i < len(params) - 1 else h
    print(f"agreement with KERAS_3layer on 10,000 held-out inputs: {np.mean(h.argmax(1) == P[60000:].argmax(1)):.4f}")


if __name__ == "__main__":
    main()
