"""Following a run from a shell: the live progress line, the closing summary, the exit status.

Shared by ``maintd trigger --wait`` (the run is on a daemon) and ``maintd run-job``
(the run is in this process). On a terminal the progress is one line rewritten in
place; elsewhere (a pipe, CI) a new line is printed each time the progress changes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from typing import Any, TextIO

from maintd.scheduler.cli.exit_codes import EX_FAILED, EX_OK
from maintd.scheduler.cli.render import (
    error_tail,
    paint,
    progress_line,
    status_style,
    summary_lines,
    use_colour,
)


class LiveLine:
    """The progress of a run on ``stream``: rewritten in place on a terminal, else one line per change."""

    def __init__(self, stream: TextIO, *, live: bool | None = None) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self._text = ""  # the line to show
        self._shown = 0  # characters of it on screen now
        self._last: tuple[Any, ...] | None = None

    def update(self, run: Mapping[str, Any], elapsed_s: float) -> None:
        text = progress_line(run, elapsed_s)
        if self.live:
            # One character short of the width: a wrapped line cannot be rewritten with \r.
            self._text = text[: max(20, shutil.get_terminal_size().columns - 1)]
            self._draw()
            return
        key = (run.get("status"), run.get("progress"))
        if key != self._last:
            self._last = key
            self.stream.write(text + "\n")
            self.stream.flush()

    def _draw(self) -> None:
        # Spaces, not an erase escape, wipe what a longer previous line left.
        self.stream.write("\r" + self._text.ljust(self._shown))
        self.stream.flush()
        self._shown = len(self._text)

    def clear(self) -> None:
        """Take the live line off the screen (before anything else is printed)."""
        if self.live and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0

    def print_above(self, text: str) -> None:
        """Print ``text`` (ending in a newline) and redraw the live line below it."""
        self.clear()
        self.stream.write(text)
        if self.live and self._text and text.endswith("\n"):
            self._draw()
        else:
            self.stream.flush()


class AboveLiveLine:
    """A text stream whose writes go above a :class:`LiveLine`: where ``run-job`` sends its logs.

    ``isatty()`` answers whether colour is wanted, since that is what the log renderer asks it.
    """

    def __init__(self, line: LiveLine) -> None:
        self.line = line

    def write(self, text: str) -> int:
        self.line.print_above(text)
        return len(text)

    def flush(self) -> None:
        self.line.stream.flush()

    def isatty(self) -> bool:
        return use_colour(self.line.stream)


def report_end(run: Mapping[str, Any], *, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Print how a run ended (summary on ``out``, the error's tail on ``err``); return the exit status."""
    if as_json:
        out.write(json.dumps(run, indent=2) + "\n")
    else:
        head, *rest = summary_lines(run)
        out.write("\n".join([paint(head, status_style(run["status"]), use_colour(out)), *rest]) + "\n")
        if run["status"] != "succeeded" and (tail := error_tail(run.get("error"))):
            err.write("error:\n" + "\n".join(tail) + "\n")
    out.flush()
    return EX_OK if run["status"] == "succeeded" else EX_FAILED
