"""What every admin command prints: the API's answer as JSON with ``--json``, else in words."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from maintd.scheduler.cli.exit_codes import EX_OK


def now() -> datetime:
    return datetime.now(UTC)


def show(args: argparse.Namespace, answer: Any, for_people: Callable[[Any], str]) -> int:
    """Print the API's answer: as JSON with ``--json``, else as ``for_people`` words it."""
    print(json.dumps(answer, indent=2) if args.json else for_people(answer))
    return EX_OK
