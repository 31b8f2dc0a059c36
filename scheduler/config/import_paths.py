"""``[scheduler] import_paths``: where an operator's own task modules (``mypkg.tasks:purge``) are found.

The console script's ``sys.path`` holds its own directory and the virtualenv,
not the working directory, so a task package beside the config is not
importable by itself. Each directory listed, relative to the config file's
directory, is put first on ``sys.path`` (in the order given) before any task is
imported: by ``maintd run``, ``check-config``, ``run-job`` and a SIGHUP reload
alike. A directory that does not exist is a config error naming the key.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def add_import_paths(scheduler_table: Any, config_path: Path | None) -> list[str]:
    """Put the ``import_paths`` of a raw ``[scheduler]`` table first on ``sys.path``; return
    one problem per directory that does not exist (a wrong type is the model's to report)."""
    entries = scheduler_table.get("import_paths") if isinstance(scheduler_table, dict) else None
    if not isinstance(entries, list):
        return []
    base = config_path.parent if config_path is not None else Path.cwd()
    found, problems = [], []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            continue
        directory = (base / entry).resolve()
        if directory.is_dir():
            found.append(str(directory))
        else:
            problems.append(f"scheduler.import_paths[{index}]: no such directory: {directory}")
    # Already there (a reload, or the same directory twice): left where it is.
    sys.path[:0] = [d for d in dict.fromkeys(found) if d not in sys.path]
    return problems
