"""What every benchmark script shares: the repository on ``sys.path``, quiet TensorFlow, the models
folder, the machine line and the results file under ``bench/results/``."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "models"  # third-party models, with their source in its README
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# set before anything imports TensorFlow (hls4ml and the Keras importer do)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_results(name: str, t0: float | None = None, **fields: Any) -> Path:
    """Write ``bench/results/<name>.json`` with the machine, the fields and the run's seconds."""
    payload: dict[str, Any] = {"machine": machine(), **fields}
    if t0 is not None:
        payload["seconds"] = round(time.perf_counter() - t0, 1)
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {out}" + (f" ({payload['seconds']:.0f} s)" if t0 is not None else ""))
    return out
