"""The security settings of fluvial.toml: flow_dirs, allowed_hosts, allowed_origins, tls_cert/tls_key.

Every wrong value is a ConfigError that names the file and the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fluvial.errors import ConfigError
from fluvial.settings import ServerSettings, Settings


def load(folder: Path, text: str) -> Settings:
    path = folder / "fluvial.toml"
    path.write_text(text)
    return Settings.load(path)


def load_error(folder: Path, text: str) -> str:
    path = folder / "fluvial.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Settings.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_defaults() -> None:
    s = ServerSettings()
    assert (s.flow_dirs, s.allowed_hosts, s.allowed_origins, s.tls_cert, s.tls_key) == (None, (), (), None, None)


def test_paths_are_relative_to_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "flows" / "v2").mkdir(parents=True)
    s = load(tmp_path, '[server]\nflow_dirs = ["flows", "flows/v2/"]\ntls_cert = "c.pem"\ntls_key = "/k.pem"\n')
    assert s.server.flow_dirs == ((tmp_path / "flows").resolve(), (tmp_path / "flows" / "v2").resolve())
    assert (s.server.tls_cert, s.server.tls_key) == (tmp_path / "c.pem", Path("/k.pem"))
    assert load(tmp_path, "[server]\nflow_dirs = []\n").server.flow_dirs == ()  # only the served flow files


@pytest.mark.parametrize(("text", "expected"), [
    ('flow_dirs = "flows"', "[server].flow_dirs must be an array of strings, got 'flows' (a string)"),
    ("flow_dirs = [1]", "[server].flow_dirs[0] must be a string, got 1 (an integer)"),
    ('flow_dirs = ["nope"]', "[server].flow_dirs[0] must be an existing directory, got '"),
    ('flow_dirs = ["~/flows"]', "[server].flow_dirs[0] must not start with ~"),
    ('allowed_hosts = ["http://x.example"]', "[server].allowed_hosts[0] must be a host name without port"),
    ('allowed_hosts = ["ok.example", "x.example:8470"]', "[server].allowed_hosts[1] must be a host name"),
    ('allowed_hosts = [""]', "[server].allowed_hosts[0] must be a host name"),
    ('allowed_origins = ["dash.example.com"]', "[server].allowed_origins[0] must be an origin as browsers send it"),
    ('allowed_origins = ["https://dash.example.com/"]', "[server].allowed_origins[0] must be an origin"),
    ('allowed_origins = ["ftp://dash.example.com"]', "[server].allowed_origins[0] must be an origin"),
    ('allowed_origins = ["https://dash.example.com:99999"]', "[server].allowed_origins[0] must be an origin"),
    ('allowed_origins = ["*"]', "[server].allowed_origins[0] must be an origin"),
    ('tls_cert = "c.pem"', "[server].tls_cert is set but tls_key is not: HTTPS needs both"),
    ('tls_key = "k.pem"', "[server].tls_key is set but tls_cert is not"),
    ("tls_cert = 5", "[server].tls_cert must be a string, got 5 (an integer)"),
    ('allowed_host = ["x"]', "unknown key [server].allowed_host; did you mean [server].allowed_hosts?"),
])
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, f"[server]\n{text}\n")


def test_good_hosts_and_origins(tmp_path: Path) -> None:
    s = load(tmp_path, '[server]\nallowed_hosts = ["*", ".iot.example.com", "api.example.com", "::1", "[::1]", '
                       '"10.1.2.3"]\nallowed_origins = ["http://localhost:3000", "https://[::1]", '
                       '"https://dash.example.com:8443"]\n')
    assert len(s.server.allowed_hosts) == 6 and len(s.server.allowed_origins) == 3
