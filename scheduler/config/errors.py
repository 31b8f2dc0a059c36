"""The one error a config raises, apart from the models so that the command line
catches it without loading pydantic."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(Exception):
    """The config cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
