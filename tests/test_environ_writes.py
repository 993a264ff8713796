"""Process-wide environment writes happen where docs/architecture.md says: ``codesign/tools.py`` (TensorFlow's
defaults before its import, a tool's variables for the duration of a call into a library that reads them)
and ``codesign/jobs.py`` (a worker's thread pools, Ray's settings)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"codesign/tools.py", "codesign/jobs.py"}
WRITE = re.compile(r"os\.environ(\[[^\]]+\]\s*(\+|-)?=(?!=)|\.(update|setdefault|pop|clear|popitem)\()|os\.(putenv|unsetenv)\(")


def test_only_the_documented_modules_write_the_process_environment():
    writers = sorted(str(p.relative_to(ROOT)) for d in ("codesign", "hls", "rtl_sim") for p in (ROOT / d).rglob("*.py")
                     if WRITE.search(p.read_text()))
    assert set(writers) <= ALLOWED, f"{sorted(set(writers) - ALLOWED)} write os.environ; use codesign.tools"


def test_the_check_sees_an_assignment_and_an_update_but_not_a_read():
    assert WRITE.search('os.environ["A"] = "1"') and WRITE.search("os.environ.update(env)")
    assert not WRITE.search('if os.environ["A"] == "1":') and not WRITE.search('os.environ.get("A")')
