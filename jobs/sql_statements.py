"""What a statement of the ``sql`` task is, read from its text: whether it can run dry.

A dry run executes the statement inside a transaction that is rolled back, so it
must be one statement that PostgreSQL runs in a transaction and that leaves the
transaction to its caller. This is a reading of the words, not a parser: comments
and quoted text are skipped, then the leading keywords decide. PostgreSQL itself
still has the last word at run time (a prepared statement is one statement; a
procedure's COMMIT fails inside a transaction block).
"""

from __future__ import annotations

import re

# Comments, and quoted text (strings, E-strings, dollar quoting, quoted identifiers)
# whose semicolons and keywords are not the statement's.
_SKIPPED = re.compile(
    r"--[^\n]*|/\*.*?\*/|[Ee]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(\$[A-Za-z_0-9]*\$).*?\1",
    re.S,
)
_WORD = re.compile(r"[A-Za-z_]+")

# Statements that control the transaction they would run in.
TRANSACTION_CONTROL = (
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
    "PREPARE TRANSACTION",
)
# Statements PostgreSQL refuses inside a transaction block, or whose effect no rollback undoes.
OUTSIDE_A_TRANSACTION = (
    "VACUUM",
    "CHECKPOINT",
    "CLUSTER",
    "REINDEX",
    "CREATE DATABASE",
    "DROP DATABASE",
    "ALTER DATABASE",
    "CREATE TABLESPACE",
    "DROP TABLESPACE",
    "ALTER SYSTEM",
    "CREATE SUBSCRIPTION",
    "ALTER SUBSCRIPTION",
    "DROP SUBSCRIPTION",
    "DISCARD",
)
_CONCURRENTLY = ("CREATE INDEX", "CREATE UNIQUE INDEX", "DROP INDEX", "REFRESH MATERIALIZED VIEW")


def statements(sql: str) -> list[str]:
    """The statements of ``sql`` (split at semicolons outside comments and quotes), each as
    its words in upper case with comments and quoted text left out; empty ones dropped."""
    bare = _SKIPPED.sub(" ", sql)
    found = []
    for part in bare.split(";"):
        words = " ".join(word.upper() for word in _WORD.findall(part))
        if words:
            found.append(words)
    return found


def dry_run_problem(sql: str) -> str | None:
    """Why ``sql`` cannot run in a transaction that is rolled back; None when it can."""
    found = statements(sql)
    if len(found) != 1:
        return f"a dry run runs exactly one statement, this is {len(found)}"
    words = found[0] + " "
    for head in TRANSACTION_CONTROL:
        if words.startswith(head + " "):
            return f"{head} controls the transaction a dry run runs in and rolls back"
    for head in OUTSIDE_A_TRANSACTION:
        if words.startswith(head + " "):
            return f"{head} cannot run inside a transaction that is rolled back"
    for head in _CONCURRENTLY:
        if words.startswith(head + " ") and " CONCURRENTLY " in words:
            return f"{head} CONCURRENTLY cannot run inside a transaction that is rolled back"
    return None
