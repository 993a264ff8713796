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

    def print(self, message: str) -> None:
        self.console.print(message)


class Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._p, self._t = progress, task

    def advance(self, n: int = 1, info: str = "") -> None:
        if self._p is not None:
            self._p.update(self._t, advance=n, info=info)


SILENT = Reporter(quiet=True)
