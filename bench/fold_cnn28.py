"""A 28x28 CNN with 20,904 weights for the folded-CNN scale case (docs/guide/folding.md, "Folded CNNs").

Writes into DIR (default ``bench/results/cnn28``): ``digits28.npz``, scikit-learn's digits upscaled to 28x28x1
(each pixel 3x3, a 2-pixel zero border, values in [0, 1]; the same 80/20 stratified split at seed 0), and
``cnn28.pt2``, a float PyTorch CNN trained on it for 15 epochs (conv 3x3 1->8, ReLU, max-pool 2, conv 3x3 8->16,
ReLU, max-pool 2, Dense 400->48, ReLU, Dense 48->10), saved with ``torch.export``. Then, from DIR:

    codesign flow cnn28.pt2 --data digits28.npz --board arty-a7-35 --budget lut=0.2,dsp=0.2 --samples 500 --out run

    python bench/fold_cnn28.py [DIR]
    python bench/fold_cnn28.py --price RUN      # the cost model now against the run's Yosys counts per stage
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(out: Path) -> None:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch import nn

    out.mkdir(parents=True, exist_ok=True)
    d = load_digits()
    X = np.kron(d.images / 16.0, np.ones((1, 3, 3)))  # 24x24
    X = np.pad(X, ((0, 0), (2, 2), (2, 2)))[..., None].astype(np.float32)  # 28x28x1, channels last
    Xtr, Xte, ytr, yte = train_test_split(X, d.target, test_size=0.2, random_state=0, stratify=d.target)
    np.savez(out / "digits28.npz", X_train=Xtr, y_train=ytr, X_test=Xte, y_test=yte)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    m = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(16 * 5 * 5, 48), nn.ReLU(), nn.Linear(48, 10))
    Xt, yt = torch.tensor(Xtr.transpose(0, 3, 1, 2)), torch.tensor(ytr)  # torch's (N, C, H, W)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for _ in range(15):
        perm = torch.randperm(len(Xt))
        for i in range(0, len(Xt), 32):
            b = perm[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(m(Xt[b]), yt[b]).backward()
            opt.step()
    m.eval()
    with torch.no_grad():
        acc = float((m(torch.tensor(Xte.transpose(0, 3, 1, 2))).argmax(1).numpy() == yte).mean())
    weights = sum(p.numel() for n, p in m.named_parameters() if "weight" in n)
    torch.export.save(torch.export.export(m, (torch.zeros(1, 1, 28, 28),)), out / "cnn28.pt2")
    print(f"{out / 'cnn28.pt2'}: {weights} weights, float test accuracy {acc:.3f}; data {out / 'digits28.npz'}")


def price(run: Path) -> None:
    """The flow's run ``run`` (its compressed network and report) priced by the cost model as it is now, beside the
    report's Yosys counts (each stage its own top, summed), with and without DSP inference."""
    import json

    import _common  # noqa: F401  (the repository on sys.path)
    from codesign.board import load_board
    from codesign.compress.cost import network_cost, total_cost
    from codesign.core.network import Network

    rep = json.loads((run / "report.json").read_text())
    net, board = Network.load(run), load_board(rep["board"]["name"])
    synth = rep["estimate"]["synth"]
    for label, mapping, counts in (("DSPs on", None, synth), ("no DSP", "lut", synth["lut_only"])):
        model = total_cost(network_cost(net, board, mapping))
        print(f"{label}: " + ", ".join(f"{k} Yosys {counts[k]:,} model {model[k]:,}"
                                       + (f" ({model[k] / counts[k] - 1:+.1%})" if k in ("lut", "ff") else "")
                                       for k in ("lut", "ff", "dsp", "bram")))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--price"]:
        price(Path(sys.argv[2]))
    else:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "cnn28")
