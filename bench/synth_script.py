"""ABC9 scripts: Yosys's default against ours (``rtl_sim.synth.FAST_ABC9_SCRIPT``), per layer.

    python bench/synth_script.py [--family xc7]

The layers of bench/estimator_error.py's four real networks, LUT-only, each synthesized twice
with an empty cache: LUT count and seconds with each script. Writes
bench/results/synth_script.json. (Long: Yosys's default script spends minutes on the jet layers.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from codesign.board import SYNTH_FAMILIES
from _common import machine, write_results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="xc7", choices=SYNTH_FAMILIES)
    args = ap.parse_args()
    from estimator_error import networks

    nets = networks()  # built (or read) before the cache is pointed elsewhere
    from rtl_sim.synth import FAST_ABC9_SCRIPT, synthesize_layers

    t0 = time.perf_counter()
    rows = []
    print(f"machine: {machine()}")
    print(f"{'network':<22}{'layer':<10}{'default LUT':>12}{'ours LUT':>10}{'LUT diff':>9}{'default s':>10}{'ours s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CODESIGN_CACHE"] = tmp  # every synthesis runs, none is read from the cache
        for name, net in nets.items():
            runs = {label: synthesize_layers(net, args.family, dsp=False, mult="lut", abc9_script=script)
                    for label, script in (("default", None), ("ours", FAST_ABC9_SCRIPT))}
            for layer in runs["default"]:
                d, o = runs["default"][layer], runs["ours"][layer]
                row = {"network": name, "layer": layer, "default_lut": d["lut"], "ours_lut": o["lut"],
                       "lut_diff_pct": round(100.0 * (o["lut"] - d["lut"]) / max(d["lut"], 1), 2),
                       "default_s": d["seconds"], "ours_s": o["seconds"]}
                rows.append(row)
                print(f"{name:<22}{layer:<10}{d['lut']:>12,}{o['lut']:>10,}{row['lut_diff_pct']:>8.1f}%"
                      f"{d['seconds']:>10.1f}{o['seconds']:>8.1f}")
    sd, so = sum(r["default_s"] for r in rows), sum(r["ours_s"] for r in rows)
    ld, lo = sum(r["default_lut"] for r in rows), sum(r["ours_lut"] for r in rows)
    print(f"all layers: LUT {ld:,} vs {lo:,} ({100.0 * (lo - ld) / ld:+.1f} %), "
          f"Yosys seconds {sd:.0f} vs {so:.0f} ({sd / max(so, 1e-9):.1f}x faster)")
    write_results("synth_script", t0, family=args.family, rows=rows,
                  summary={"default_lut": ld, "ours_lut": lo, "default_s": round(sd, 1), "ours_s": round(so, 1)})


if __name__ == "__main__":
    main()
