"""Figures for the reports, drawn without pyplot so no global matplotlib backend is set."""

from __future__ import annotations

import io
from typing import Any


def new_figure(**kwargs: Any):
    """A matplotlib ``Figure`` not registered with pyplot (so nothing global changes)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
