"""Which daemon an admin command talks to: --url, $MAINTD_URL, else [server] read leniently."""

from __future__ import annotations

from pathlib import Path

import pytest

from maintd.scheduler.cli.target import Target, target, url_of
from maintd.scheduler.config.errors import ConfigError
from maintd.scheduler.config.model import ServerConfig

pytestmark = pytest.mark.unit

# Everything the daemon would refuse, except [server]: none of it is the client's business.
BROKEN_BUT_FOR_SERVER = """
[server]
host = "10.1.2.3"
port = 9000
trusted_proxies = ["not a network"]

[scheduler]
shedule = "typo"
import_paths = ["no/such/dir"]

[[admin.tokens]]
name = "ops"

[jobs.purge]
task = "mypkg.maintenance:purge"
schedule = "61 * * * *"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_only_host_and_port_are_read_of_the_config(tmp_path: Path) -> None:
    config = write(tmp_path, BROKEN_BUT_FOR_SERVER)
    assert target(url=None, config=config, environ={"MAINTD_TOKEN": " t0k "}) == Target("http://10.1.2.3:9000", "t0k")


def test_the_config_comes_from_maintd_config_by_default(tmp_path: Path) -> None:
    config = write(tmp_path, "[server]\nport = 9001\n")
    assert target(url=None, config=None, environ={"MAINTD_CONFIG": str(config)}).url == "http://127.0.0.1:9001"


def test_url_flag_first_then_environment_then_config(tmp_path: Path) -> None:
    config = write(tmp_path, "[server]\nport = 9002\n")
    environ = {"MAINTD_URL": "http://from-env:1"}
    assert target(url="http://from-flag:1", config=config, environ=environ).url == "http://from-flag:1"
    assert target(url=None, config=config, environ=environ).url == "http://from-env:1"
    assert target(url=None, config=config, environ={"MAINTD_URL": "  "}).url == "http://127.0.0.1:9002"


def test_no_token_is_none() -> None:
    assert target(url="http://x:1", config=None, environ={"MAINTD_TOKEN": ""}).token is None


def test_the_daemons_own_defaults(tmp_path: Path) -> None:
    config = write(tmp_path, "[database]\ndsn = 'embedded'\n")
    server = ServerConfig()
    assert target(url=None, config=config, environ={}).url == f"http://{server.host}:{server.port}"


@pytest.mark.parametrize(
    ("host", "url"),
    [("0.0.0.0", "http://127.0.0.1:80"), ("::", "http://127.0.0.1:80"), ("::1", "http://[::1]:80"),
     ("maintd.internal", "http://maintd.internal:80")],
)  # fmt: skip
def test_url_of_a_listening_address(host: str, url: str) -> None:
    assert url_of(host, 80) == url


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[server]\nport = 'x'\n", "server.port: must be an integer 0-65535, got 'x'"),
        ("[server]\nport = true\n", "server.port: must be an integer 0-65535, got True"),
        ("[server]\nport = 0\n", "server.port: 0 lets the OS pick the daemon's port"),
        ("[server]\nhost = ''\n", "server.host: must be a host name or address, got ''"),
        ("server = 1\n", "server: must be a table"),
        ("[server\n", "TOML syntax error"),
    ],
)
def test_what_cannot_tell_the_url_is_a_config_error_that_says_how_else(tmp_path: Path, text: str, problem: str) -> None:
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        target(url=None, config=config, environ={})
    [line] = raised.value.problems
    assert line.startswith(f"{config}: ") and problem in line
    assert line.endswith("; or give the daemon's URL with --url or $MAINTD_URL")


def test_a_missing_config_says_how_else(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        target(url=None, config=tmp_path / "nope.toml", environ={})
    assert raised.value.problems == [
        f"{tmp_path / 'nope.toml'}: cannot read config: No such file or directory;"
        " or give the daemon's URL with --url or $MAINTD_URL"
    ]
