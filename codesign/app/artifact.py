"""The artifact directory: one folder per run, each step reading and writing it.

A step marks the directory incomplete while it runs (``.incomplete`` names the step), removes
its previous output first, builds into a temporary folder and moves it into place only when
it succeeded; ``report.json`` is rewritten atomically. A failed or interrupted step therefore
leaves nothing a later step could mistake for its output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from codesign.core.network import NETWORK_JSON
from codesign.errors import ArtifactError

REPORT_JSON = "report.json"
INCOMPLETE = ".incomplete"


class Artifact:
    """An artifact directory (``DIR`` in the CLI)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        # absolute: the tools (Verilator, g++, Yosys) run in directories of their own
        self.dir = Path(directory).absolute()

    # ---- creation ---------------------------------------------------------------------
    def claim(self, force: bool = False) -> None:
        """Make the directory for a new run; refuse one that holds another run unless ``force``."""
        if self.dir.exists() and not self.dir.is_dir():
            raise ArtifactError(f"{self.dir} exists and is not a directory; choose another --out")
        if self.dir.is_dir() and any(self.dir.iterdir()):
            holds_run = (self.dir / REPORT_JSON).exists() or (self.dir / NETWORK_JSON).exists() or (
                self.dir / INCOMPLETE).exists()
            if holds_run and not force:
                raise ArtifactError(
                    f"{self.dir} already holds a run; pass --force to replace it, or choose another --out"
                )
            if not holds_run and not force:
                raise ArtifactError(f"{self.dir} is not empty; pass --force to use it anyway, or choose another --out")
            for child in self.dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)

    def require(self) -> None:
        """An existing, complete-enough directory with a saved network."""
        if not (self.dir / NETWORK_JSON).is_file():
            raise ArtifactError(f"{self.dir}: no network here; run 'codesign compress' or 'codesign flow' first")

    # ---- report.json ------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        p = self.dir / REPORT_JSON
        if not p.is_file():
            return {}
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{p}: corrupt report ({e}); re-run the flow") from None

    def update(self, **sections: Any) -> dict[str, Any]:
        rep = self.report()
        for k, v in sections.items():
            if v is None:
                rep.pop(k, None)
            else:
                rep[k] = v
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".report.")
        with os.fdopen(fd, "w") as f:
            json.dump(rep, f, indent=1, default=str)
        os.replace(tmp, self.dir / REPORT_JSON)
        return rep

    def timing(self, step: str, seconds: float) -> None:
        t = self.report().get("timings_s", {})
        t[step] = round(seconds, 2)
        self.update(timings_s=t)

    @property
    def incomplete(self) -> str | None:
        p = self.dir / INCOMPLETE
        return p.read_text().strip() if p.is_file() else None

    # ---- steps ------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, name: str, subdir: str | None = None) -> Iterator[Path | None]:
        """Run one step: its old output and report section go first; its folder appears on success."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / INCOMPLETE).write_text(f"{name}\n")
        self.update(**{name: None})
        tmp: Path | None = None
        if subdir:
            final = self.dir / subdir
            if final.exists():
                shutil.rmtree(final)
            tmp = Path(tempfile.mkdtemp(dir=self.dir, prefix=f".{subdir}."))
        try:
            yield tmp
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            (self.dir / INCOMPLETE).write_text(f"{name} (failed or interrupted)\n")
            raise
        if tmp is not None:
            os.replace(tmp, self.dir / subdir)
        (self.dir / INCOMPLETE).unlink(missing_ok=True)
