"""LUTs per nonzero weight, each layer pruned versus the same layer unpruned.

    python bench/lut_per_weight.py

The embedded default network (digits compressed as `codesign flow` does; built once and
cached by bench/estimator_error.py) against the same layers with every pruned weight put
back (drawn from the layer's own nonzero values, so types and value mix are unchanged). If the cost follows the nonzero count, LUTs per
nonzero weight stay about the same while the totals fall. Writes bench/results/lut_per_weight.json.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from _common import machine, write_results


def main() -> None:
    from estimator_error import networks

    from codesign.core.layers import Dense
    from rtl_sim.synth import synthesize_layers

    t0 = time.perf_counter()
    pruned = networks()["digits default flow"]
    rng = np.random.default_rng(0)
    full = copy.deepcopy(pruned)
    for layer in full.layers:
        if isinstance(layer, Dense):
            # the same layer with every pruned position filled by a value drawn from its own
            # nonzero weights: same shape, types and value distribution, no sparsity
            w = layer.weight.copy()
            zeros = w == 0
            w[zeros] = rng.choice(w[~zeros], size=int(zeros.sum()))
            layer.weight, layer.mask = w, np.ones_like(w, dtype=bool)
    layers = {tag: {l.name: l for l in net.weighted_layers()} for tag, net in (("pruned", pruned), ("unpruned", full))}
    by = {(tag, name): (layers[tag][name], r) for tag, net in (("pruned", pruned), ("unpruned", full))
          for name, r in synthesize_layers(net, "xc7", dsp=False, mult="lut").items()}
    rows = []
    print(f"machine: {machine()}")
    print(f"{'layer':<8}{'nonzero':>9}{'LUT':>8}{'LUT/nz':>8}   {'unpruned nz':>11}{'LUT':>8}{'LUT/nz':>8}{'LUT ratio':>11}{'nz ratio':>10}")
    for name in layers["pruned"]:
        (lp, rp), (lf, rf) = by[("pruned", name)], by[("unpruned", name)]
        nzp, nzf = int(np.count_nonzero(lp.weight)), int(np.count_nonzero(lf.weight))
        row = {"layer": name, "nonzero": nzp, "lut": rp["lut"], "unpruned_nonzero": nzf, "unpruned_lut": rf["lut"],
               "lut_per_nz": round(rp["lut"] / max(nzp, 1), 2), "unpruned_lut_per_nz": round(rf["lut"] / max(nzf, 1), 2),
               "lut_ratio": round(rp["lut"] / max(rf["lut"], 1), 3), "nonzero_ratio": round(nzp / max(nzf, 1), 3)}
        rows.append(row)
        print(f"{name:<8}{nzp:>9}{rp['lut']:>8}{row['lut_per_nz']:>8}   {nzf:>11}{rf['lut']:>8}{row['unpruned_lut_per_nz']:>8}"
              f"{row['lut_ratio']:>11}{row['nonzero_ratio']:>10}")
    write_results("lut_per_weight", t0, rows=rows)


if __name__ == "__main__":
    main()
