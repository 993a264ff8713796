"""Progress display (rich) for long steps; silent when quiet or when output is not a terminal."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """Passed down to the steps: shows spinners and bars on stderr unless quiet."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, quiet=quiet)

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        if self.quiet:
            yield
            return
        with self.console.status(message):
            yield
        self.console.print(f"[green]done[/green] {message}")

    @contextlib.contextmanager
    def bar(self, message: str, total: int) -> Iterator["Bar"]:
        if self.quiet:
            yield Bar(None, None)
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[info]}"), console=self.console, transient=False) as p:
            task = p.add_task(message, total=total, info="")
            yield Bar(p, task)

    @contextlib.contextmanager
    def bars(self) -> Iterator["Bars"]:
        """Several bars under one display, each added when its work starts (``Bars.add``), with the time
        elapsed and an estimate of the time left."""
        if self.quiet:
            yield Bars(None)
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                      TextColumn("{task.fields[info]}"), console=self.console, transient=False) as p:
            yield Bars(p)

    def print(self, message: str) -> None:
        self.console.print(message)


class Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._p, self._t = progress, task

    def advance(self, n: int = 1, info: str = "") -> None:
        if self._p is not None:
            self._p.update(self._t, advance=n, info=info)


class Bars:
    def __init__(self, progress: Progress | None) -> None:
        self._p = progress

    def add(self, message: str, total: float, info: str = "") -> Bar:
        if self._p is None:
            return Bar(None, None)
        return Bar(self._p, self._p.add_task(message, total=total, info=info))


SILENT = Reporter(quiet=True)
