"""A PostgreSQL server of the daemon's own, for ``[database] dsn = "embedded"``.

A new user's machine may have no PostgreSQL at all, so with ``dsn = "embedded"``
the daemon runs one itself in ``data_dir``:

* binaries: those bundled by the ``pgserver`` wheel (a dependency of maintd),
  else the system's (``pg_config --bindir``);
* ``initdb`` once, when ``data_dir/PG_VERSION`` is missing; ``CREATE DATABASE``
  whenever the database is missing;
* the server listens on a unix socket only (``listen_addresses = ''``), so it
  never competes for a TCP port with another server on the machine. Clients
  need no password (``trust``): only the server's OS user and root can reach
  the socket, whose directory is private to that user;
* a server already running on ``data_dir`` (left over after a crash of the
  daemon, or started by another maintd process) is reused; only the object
  that started a server stops it;
* PostgreSQL refuses to run as root: when the daemon is root, the server runs
  as the owner of an initialised ``data_dir``, else as the OS user ``postgres``,
  else as a system user ``maintd-pg`` created for it.

The server log is ``data_dir/postgres.log``. Every method blocks (start: about
a second for a fresh data dir, mostly initdb; 0.15 s for an existing one): call
them from a thread when an event loop runs (``asyncio.to_thread``).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import stat
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "find_postgres_bindir"]

log = logging.getLogger(__name__)

_SUPERUSER = "postgres"  # the database role initdb creates
# As root, the server runs as the first that exists; the last is created if none does.
_OS_USERS = ("postgres", "maintd-pg")
# Only names the socket file (.s.PGSQL.5432): no TCP port is ever opened.
_PORT = 5432
# sun_path holds 108 bytes on Linux (104 on macOS), the terminating NUL included.
_MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107
# A socket directory made of these goes unquoted into the server's option
# string, its comma-separated unix_socket_directories and asyncpg's host list
# (which splits on commas).
_PLAIN_PATH_CHARS = frozenset(string.ascii_letters + string.digits + "/._-")
_TIMEOUT_S = 30
_LOG_TAIL_LINES = 20
_SERVER_BINARIES = ("initdb", "pg_ctl", "postgres", "psql")
_R, _X = 4, 1  # permission bits of one class (owner, group or other)


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be found, initialised, started or stopped."""


@dataclass(frozen=True)
class _OsUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, the primary one included

    @classmethod
    def of(cls, entry: pwd.struct_passwd) -> _OsUser:
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)))


@dataclass(frozen=True)
class _Postmaster:
    pid: int
    socket_dir: Path
    port: int


class EmbeddedPostgres:
    """The PostgreSQL server in ``data_dir``: started on demand, stopped by its starter only."""

    def __init__(self, data_dir: Path, *, database: str = "maintd") -> None:
        if not 0 < len(database.encode()) <= 63 or "\0" in database:
            # PostgreSQL would silently truncate a longer name, and the next
            # start would then not find the database it created.
            raise ValueError(f"database name must be 1 to 63 bytes, got {database!r}")
        self._data_dir = Path(data_dir).resolve()
        self._database = database
        self._log = self._data_dir / "postgres.log"
        self._dsn: str | None = None
        self._bindir: Path | None = None
        self._pid: int | None = None  # the postmaster this object started, if any
        self._os_user: _OsUser | None = None  # who that postmaster runs as, when we are root

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            raise EmbeddedPostgresError(f"the embedded PostgreSQL in {self._data_dir} is not started")
        return self._dsn

    def start(self) -> str:
        """Start the server, or reuse the one running on ``data_dir``; return an asyncpg DSN."""
        bindir = self._bindir = find_postgres_bindir()
        try:
            self._data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedPostgresError(f"cannot create the data directory: {exc}") from exc
        with self._exclusive():
            running = _live_postmaster(self._data_dir)
            if running is None:
                stale = _read_postmaster(self._data_dir)
                if stale is not None and _is_zombie(stale.pid):
                    _await_reaped(stale.pid)
                running = self._start_server(bindir)
                self._pid = running.pid
            elif running.pid != self._pid:
                self._pid = None  # someone else's server: never ours to stop
                log.info("reusing the PostgreSQL server (pid %d) already running in %s", running.pid, self._data_dir)
            self._create_database(bindir, running)
        self._dsn = (
            f"postgresql://{_SUPERUSER}@/{quote(self._database, safe='')}"
            f"?host={quote(str(running.socket_dir))}&port={running.port}"
        )
        return self._dsn

    def stop(self) -> None:
        """Fast shutdown (clients disconnected, checkpoint), only of a server this object started."""
        self._dsn = None
        if self._pid is None:
            return
        with self._exclusive():
            running = _live_postmaster(self._data_dir)
            if running is not None and running.pid == self._pid and self._bindir is not None:
                self._run(
                    [self._bindir / "pg_ctl", "stop", "-w", "-m", "fast", "-t", str(_TIMEOUT_S), "-D", self._data_dir],
                    f"stopping PostgreSQL in {self._data_dir}",
                    as_server=True,
                )
                if running.socket_dir != self._data_dir:
                    # Keep /tmp tidy; the server removed its socket files already.
                    with suppress(OSError):
                        running.socket_dir.rmdir()
        self._pid = None

    # -- starting -----------------------------------------------------------

    def _start_server(self, bindir: Path) -> _Postmaster:
        initialised = (self._data_dir / "PG_VERSION").exists()
        self._os_user = self._server_os_user(initialised)
        if self._os_user is not None:
            self._give_access(bindir, self._os_user, initialised)
        if not initialised:
            log.info("initialising a PostgreSQL data directory in %s", self._data_dir)
            self._run(
                # The C locale: a fresh machine or container often has no
                # usable locale in its environment, and initdb fails on one.
                [
                    bindir / "initdb",
                    "-D",
                    self._data_dir,
                    "-U",
                    _SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
                f"initdb of {self._data_dir}",
                as_server=True,
                timeout=120,
            )
        socket_dir = self._prepare_socket_dir()
        # Settings go on the command line, not in postgresql.conf, so that
        # they follow the data dir if it moves (the socket dir depends on it).
        options = shlex.join(
            ["-c", "listen_addresses=", "-c", f"unix_socket_directories={socket_dir}", "-c", f"port={_PORT}"]
        )
        self._run(
            [
                bindir / "pg_ctl",
                "start",
                "-w",
                "-t",
                str(_TIMEOUT_S),
                "-D",
                self._data_dir,
                "-l",
                self._log,
                "-o",
                options,
            ],
            f"starting PostgreSQL in {self._data_dir}",
            as_server=True,
            timeout=_TIMEOUT_S + 10,
        )
        running = _live_postmaster(self._data_dir)
        if running is None:
            raise EmbeddedPostgresError(
                self._failure(f"starting PostgreSQL in {self._data_dir}", "pg_ctl reported a start, but no server runs")
            )
        log.info("started PostgreSQL (pid %d) in %s", running.pid, self._data_dir)
        return running

    def _server_os_user(self, initialised: bool) -> _OsUser | None:
        """The OS user to run the server as when we are root (it refuses root); None otherwise."""
        if os.geteuid() != 0:
            return None
        if initialised:
            # The data dir belongs to the user it was initialised for; that may
            # not be today's default (`postgres` installed since, say).
            owner = self._data_dir.stat().st_uid
            if owner == 0:
                raise EmbeddedPostgresError(
                    f"{self._data_dir} is owned by root, and PostgreSQL refuses to run as root: "
                    f"give it to an unprivileged user, e.g. chown -R postgres: {self._data_dir}"
                )
            try:
                return _OsUser.of(pwd.getpwuid(owner))
            except KeyError:
                raise EmbeddedPostgresError(
                    f"{self._data_dir} is owned by uid {owner}, which has no user entry"
                ) from None
        return _OsUser.of(_system_os_user())

    def _give_access(self, bindir: Path, user: _OsUser, initialised: bool) -> None:
        """As root: let `user` reach the data dir and run the binaries, changing only what stops it."""
        changed = [d for d in reversed(self._data_dir.parents) if _grant(d, d.lstat(), user, _X)]
        changed += _make_install_usable(bindir, user)
        if changed:
            shown = ", ".join(str(p) for p in changed[:10]) + (", ..." if len(changed) > 10 else "")
            log.warning(
                "gave the PostgreSQL user %s the access it needs to %d path(s): %s", user.name, len(changed), shown
            )
        if not initialised:
            os.chown(self._data_dir, user.uid, user.gid)

    def _prepare_socket_dir(self) -> Path:
        """The data dir if its socket path fits sun_path plainly, else a private dir in /tmp."""
        if (
            len(os.fsencode(self._data_dir / f".s.PGSQL.{_PORT}")) <= _MAX_SOCKET_PATH
            and set(str(self._data_dir)) <= _PLAIN_PATH_CHARS
        ):
            return self._data_dir
        # /tmp, not $TMPDIR: every process on this data dir must find the same
        # short path, whatever its environment.
        digest = hashlib.sha256(os.fsencode(self._data_dir)).hexdigest()[:16]
        directory = Path("/tmp") / f"maintd-pg-{digest}"
        directory.mkdir(mode=0o700, exist_ok=True)
        user = self._os_user
        uid = user.uid if user is not None else os.geteuid()
        info = directory.lstat()
        if user is not None and stat.S_ISDIR(info.st_mode) and info.st_uid == 0:
            # We are root and just made it: only root can own a root directory in /tmp.
            os.chown(directory, user.uid, user.gid)
        elif not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
            # Trust auth: whoever controls the socket directory controls the database.
            raise EmbeddedPostgresError(
                f"socket directory {directory} is not a directory owned by uid {uid}: remove it and start again"
            )
        os.chmod(directory, 0o700)
        return directory

    def _create_database(self, bindir: Path, running: _Postmaster) -> None:
        # psql rather than asyncpg under asyncio.run: start() is called from a
        # thread of the daemon's event loop, or from within one in tests, and a
        # subprocess works the same everywhere. \gexec runs the CREATE only when
        # missing (CREATE DATABASE has no IF NOT EXISTS); psql quotes the name.
        script = (
            "SELECT format('CREATE DATABASE %I', :'database')"
            " WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database')\\gexec\n"
        )
        self._run(
            [
                bindir / "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"database={self._database}",
                "-h",
                running.socket_dir,
                "-p",
                str(running.port),
                "-U",
                _SUPERUSER,
                "-d",
                "postgres",
            ],
            f"creating database {self._database!r} (server pid {running.pid})",
            input=script,
        )

    # -- plumbing -----------------------------------------------------------

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise starts and stops on this data dir across processes (`maintd migrate` beside `maintd run`).

        File system errors inside (a path we may not change, say) become
        EmbeddedPostgresError, which the daemon reports without a traceback.
        """
        try:
            fd = os.open(self._data_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)
        except OSError as exc:
            raise EmbeddedPostgresError(str(exc)) from exc

    def _run(
        self,
        args: list[Any],
        what: str,
        *,
        as_server: bool = False,
        timeout: float = _TIMEOUT_S,
        input: str | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {}
        if as_server and self._os_user is not None:
            user = self._os_user
            # extra_groups: without it the child keeps root's supplementary groups.
            kwargs = {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}
        try:
            result = subprocess.run(
                [str(arg) for arg in args],
                input=input,
                check=False,  # the return code is ours to report, with the log
                capture_output=True,
                text=True,
                # PG* variables (PGPORT, PGHOST, PGOPTIONS, ...) would change
                # what the server and psql do; "/" is a cwd every user can use.
                env={key: value for key, value in os.environ.items() if not key.startswith("PG")},
                cwd="/",
                timeout=timeout,
                **kwargs,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedPostgresError(self._failure(what, str(exc))) from exc
        if result.returncode != 0:
            raise EmbeddedPostgresError(self._failure(what, (result.stdout + result.stderr).strip()))

    def _failure(self, what: str, output: str) -> str:
        message = f"{what} failed" + (f":\n{output}" if output else "")
        try:
            with self._log.open("rb") as handle:  # its last 64 KiB: the log only grows
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 64 * 1024))
                tail = handle.read().decode(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return message
        return message + f"\nlast lines of {self._log}:\n" + "\n".join(tail)


def find_postgres_bindir() -> Path:
    """The directory of initdb, pg_ctl, postgres and psql: pgserver's bundled ones, else the system's."""
    bundled = _bundled_bindir()
    if bundled is not None:
        return bundled
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out.strip() and _has_server_binaries(Path(out.strip())):
            return Path(out.strip())
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) found: reinstall maintd with its "
        "dependencies (its pgserver dependency bundles them), or install a PostgreSQL server package so that "
        "`pg_config --bindir` names them, or set [database] dsn to an existing server"
    )


def _bundled_bindir() -> Path | None:
    # find_spec locates the package without importing it: importing pgserver
    # creates runtime directories and a lock file of its own.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if _has_server_binaries(bindir) else None


def _has_server_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _SERVER_BINARIES)


def _live_postmaster(data_dir: Path) -> _Postmaster | None:
    """The postmaster that postmaster.pid names, if it runs; None when none does (or the file is stale)."""
    postmaster = _read_postmaster(data_dir)
    return postmaster if postmaster is not None and _alive(postmaster.pid) else None


def _read_postmaster(data_dir: Path) -> _Postmaster | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), int(lines[3]), lines[4].strip()
    except (FileNotFoundError, IndexError, ValueError):
        # Missing, or half written by a starting server: pg_ctl start decides.
        return None
    return _Postmaster(pid, Path(socket_dir), port) if socket_dir else None


def _alive(pid: int) -> bool:
    # After a reboot (in a container especially) a stale pid may be ours or our
    # parent's; PostgreSQL makes the same exception. pid <= 0: single-user mode.
    if pid <= 0 or pid in (os.getpid(), os.getppid()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Exited but not yet reaped (Linux; elsewhere always False)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[:1] == ["Z"]  # the name in parentheses may hold anything


def _await_reaped(pid: int) -> None:
    """Wait for a crashed postmaster's zombie to go: PostgreSQL refuses to start while that pid exists.

    The postmaster is a daemon, reaped by init or a container's pid 1, which
    may be slow (seconds) or be maintd itself.
    """
    deadline = time.monotonic() + _TIMEOUT_S
    while _is_zombie(pid) and time.monotonic() < deadline:
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # works when we are its parent (maintd as pid 1)
        time.sleep(0.05)


def _system_os_user() -> pwd.struct_passwd:
    """`postgres` if it exists, else `maintd-pg`, created on first use."""
    for name in _OS_USERS:
        with suppress(KeyError):
            return pwd.getpwnam(name)
    fallback = _OS_USERS[-1]
    try:
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "maintd embedded PostgreSQL",
                fallback,
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
        )
        output = (result.stdout + result.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        output = str(exc)
    try:
        # Also when useradd failed because another process created it first.
        return pwd.getpwnam(fallback)
    except KeyError:
        raise EmbeddedPostgresError(
            f"PostgreSQL refuses to run as root and no user {_OS_USERS[0]!r} exists; creating the system user "
            f"{fallback!r} failed: {output or 'useradd gave no reason'}. Create it, or run maintd as "
            f"an unprivileged user"
        ) from None


def _make_install_usable(bindir: Path, user: _OsUser) -> list[Path]:
    """Let `user` traverse to and read the PostgreSQL install; return the paths changed.

    pip honours root's umask, so a restrictive one (077) leaves the bundled
    binaries unreadable to anyone but root, and a venv under /root is not
    traversable. Only the bits that stand in the way are added, to the one
    class (owner, group or other) that applies to `user`.
    """
    changed = [d for d in reversed(bindir.parents) if _grant(d, d.lstat(), user, _X)]
    prefix = bindir.parent
    trees = [prefix / "bin", prefix / "lib", prefix / "share"]  # not include/: the server needs no headers
    if bindir == _bundled_bindir():
        # The wheel's libpq, which psql and initdb load, lives beside the package.
        trees.append(prefix.parent.parent / "pgserver.libs")
    paths = [tree for tree in trees if tree.is_dir()]
    for tree in list(paths):
        for root, dirs, files in os.walk(tree):
            paths += [Path(root, name) for name in (*dirs, *files)]
    for path in paths:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        executable = stat.S_ISDIR(info.st_mode) or info.st_mode & stat.S_IXUSR
        if _grant(path, info, user, _R | (_X if executable else 0)):
            changed.append(path)
    return changed


def _grant(path: Path, info: os.stat_result, user: _OsUser, bits: int) -> bool:
    """Add `bits` (of _R, _X) for `user` to `path`'s mode, in the class that applies to it; True if changed."""
    if info.st_uid == user.uid:
        shift = 6
    elif info.st_gid in user.groups:
        shift = 3
    else:
        shift = 0
    wanted = bits << shift
    if info.st_mode & wanted == wanted:
        return False
    os.chmod(path, stat.S_IMODE(info.st_mode) | wanted)
    return True
