"""fluvial.toml: defaults, a full file, path resolution, every error, CLI overrides, hostile files."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest

from fluvial.config import LogConfig, StreamConfig
from fluvial.errors import ConfigError
from fluvial.settings import (
    DEFAULT_PORT,
    MAX_CONFIG_BYTES,
    BatchSettings,
    FlowSettings,
    LimitsSettings,
    ReprocessSettings,
    ServerSettings,
    Settings,
    is_loopback,
    with_overrides,
)

FULL = """\
data_dir = "var/data"
log_url = "file:///srv/fluvial/log"
store_url = "sqlite:///srv/fluvial/views.db"

[server]
host = "0.0.0.0"
port = 9000
auth = "tokens"
max_body_bytes = 1024
max_events_per_request = 10
max_pending_bytes = 2048
flow_dirs = ["flows/"]
allowed_hosts = ["fluvial.example.com", ".iot.example.com", "10.0.0.7"]
allowed_origins = ["https://dash.example.com", "http://[::1]:3000"]
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
mqtt = "mqtt://ingest:pw@broker.lan:1883"
mqtt_topic = "site/+/up"

[limits]
max_queue_events = 500
max_queue_wait_ms = 750
max_memory_bytes = 1073741824
max_connections = 64
header_timeout_s = 2.5
body_timeout_s = 12
keep_alive_s = 4
device_events_per_s = 100.5
device_events_burst = 1000
device_bytes_per_s = 65536
device_bytes_burst = 131072
dead_letter_bytes = 4096
dead_letter_window_s = 10
per_address = true

[log]
partitions = 8
fsync = "interval"
fsync_interval_ms = 250
segment_bytes = 8192

[stream]
batch_interval_ms = 50
max_batch_records = 1000
max_lag_records = 7
lease_ms = 2500

[batch]
every_s = 0
engine = "spark"
workers = 3
spark_master = "spark://h:7077"
spark_conf = { "spark.executor.memory" = "2g", "spark.sql.shuffle.partitions" = "8" }

[reprocess]
grace_s = 1.5
keep_old = true

[[flows]]
file = "flows/top10.py"
architecture = "kappa"

[[flows]]
file = "flows/readings.py"
batch_every_s = 30
"""


def write(folder: Path, text: str | bytes, name: str = "fluvial.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def flow_files(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("# a flow\n")


def load_error(tmp_path: Path, text: str | bytes, name: str = "fluvial.toml") -> str:
    """Loads a bad file; returns the message, which must name the file."""
    path = write(tmp_path, text, name)
    with pytest.raises(ConfigError) as info:
        Settings.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert len(message) < 1000, "messages stay readable whatever the input"
    return message


# Defaults and a full file ---------------------------------------------------------------------------


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings.load()
    assert s.source is None
    assert s.data_dir == tmp_path / ".fluvial"
    assert s.server == ServerSettings(host="127.0.0.1", port=8470, auth="auto", max_body_bytes=8388608,
                                      max_events_per_request=100_000, max_pending_bytes=67108864)
    assert DEFAULT_PORT == 8470 and not s.server.auth_enabled
    assert s.log == LogConfig(partitions=None, fsync="batch", fsync_interval_ms=1000, segment_bytes=67108864)
    assert s.stream == StreamConfig(batch_interval_ms=200, max_batch_records=250_000)
    assert s.max_lag_records == 5_000_000
    assert s.batch == BatchSettings(every_s=300, engine="local", workers=2, spark_master="local[*]", spark_conf={})
    assert s.reprocess == ReprocessSettings(grace_s=60, keep_old=False)
    assert s.flows == ()
    assert s == Settings(data_dir=tmp_path / ".fluvial")


def test_load_none_reads_fluvial_toml_of_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[server]\nport = 9001\n")
    monkeypatch.chdir(tmp_path)
    s = Settings.load()
    assert s.server.port == 9001
    assert s.source == path
    assert s.server.host == "127.0.0.1", "keys the file leaves out keep their default"


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    s = Settings.load(write(tmp_path, "# nothing set\n"))
    assert s.replace(source=None) == Settings(data_dir=tmp_path / ".fluvial")
    assert s.source == tmp_path / "fluvial.toml"


def test_full_file(tmp_path: Path) -> None:
    flow_files(tmp_path, "flows/top10.py", "flows/readings.py")
    s = Settings.load(write(tmp_path, FULL))
    assert s.data_dir == tmp_path / "var" / "data"
    assert (s.log_url, s.store_url) == ("file:///srv/fluvial/log", "sqlite:///srv/fluvial/views.db")
    assert s.server == ServerSettings(
        host="0.0.0.0", port=9000, auth="tokens", max_body_bytes=1024, max_events_per_request=10,
        max_pending_bytes=2048, flow_dirs=((tmp_path / "flows").resolve(),),
        allowed_hosts=("fluvial.example.com", ".iot.example.com", "10.0.0.7"),
        allowed_origins=("https://dash.example.com", "http://[::1]:3000"),
        tls_cert=tmp_path / "tls/cert.pem", tls_key=tmp_path / "tls/key.pem",
        mqtt="mqtt://ingest:pw@broker.lan:1883", mqtt_topic="site/+/up")
    assert s.log == LogConfig(partitions=8, fsync="interval", fsync_interval_ms=250, segment_bytes=8192)
    assert s.stream == StreamConfig(batch_interval_ms=50, max_batch_records=1000, lease_ms=2500)
    assert s.max_lag_records == 7
    assert s.batch == BatchSettings(every_s=0.0, engine="spark", workers=3, spark_master="spark://h:7077",
                                    spark_conf={"spark.executor.memory": "2g", "spark.sql.shuffle.partitions": "8"})
    assert s.reprocess == ReprocessSettings(grace_s=1.5, keep_old=True)
    assert s.limits == LimitsSettings(
        max_queue_events=500, max_queue_wait_ms=750, max_memory_bytes=1 << 30, max_connections=64,
        header_timeout_s=2.5, body_timeout_s=12.0, keep_alive_s=4.0, device_events_per_s=100.5,
        device_events_burst=1000, device_bytes_per_s=65536, device_bytes_burst=131072, dead_letter_bytes=4096,
        dead_letter_window_s=10.0, per_address=True)
    assert s.flows == (
        FlowSettings(file=(tmp_path / "flows/top10.py").resolve(), architecture="kappa", batch_every_s=None),
        FlowSettings(file=(tmp_path / "flows/readings.py").resolve(), architecture="lambda", batch_every_s=30.0),
    )
    assert isinstance(s.batch.every_s, float) and isinstance(s.flows[1].batch_every_s, float)


def test_the_full_file_sets_every_field() -> None:
    from fluvial import settings as mod

    names = {f.name for f in dataclasses.fields(Settings)} - {"server", "limits", "log", "stream", "batch",
                                                                 "reprocess", "flows", "source", "max_lag_records"}
    assert set(mod._SCHEMA[""]) == names
    for section, cls in [("server", ServerSettings), ("limits", LimitsSettings), ("log", LogConfig),
                         ("batch", BatchSettings),
                         ("reprocess", ReprocessSettings), ("flows", FlowSettings)]:
        assert set(mod._SCHEMA[section]) == {f.name for f in dataclasses.fields(cls)}, section
    assert set(mod._SCHEMA["stream"]) == {f.name for f in dataclasses.fields(StreamConfig)} | {"max_lag_records"}
    for keys in mod._SCHEMA.values():
        assert all(f"{key} = " in FULL or f"{key}:" in FULL for key in keys if key != "spark_conf")


def test_spark_conf_dotted_keys_are_joined(tmp_path: Path) -> None:
    s = Settings.load(write(tmp_path, '[batch.spark_conf]\nspark.executor.memory = "4g"\n"spark.ui.port" = "0"\n'))
    assert s.batch.spark_conf == {"spark.executor.memory": "4g", "spark.ui.port": "0"}
    message = load_error(tmp_path, '[batch.spark_conf]\n"a.b" = "1"\na.b = "2"\n')
    assert "[batch].spark_conf.'a.b' is given twice" in message


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flow_files(tmp_path, "flows/f.py")
    write(tmp_path / "conf", 'data_dir = "data"\n[[flows]]\nfile = "../flows/f.py"\n')
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    s = Settings.load(Path("..") / "conf" / "fluvial.toml")
    assert s.data_dir == tmp_path / "elsewhere" / ".." / "conf" / "data"
    assert s.data_dir.resolve() == (tmp_path / "conf" / "data").resolve()
    assert s.flows[0].file == (tmp_path / "flows" / "f.py").resolve()
    assert s.source is not None and s.source.is_absolute() and s.source.resolve() == tmp_path / "conf" / "fluvial.toml"

    absolute = tmp_path / "abs-data"
    s = Settings.load(write(tmp_path / "conf", f"data_dir = {str(absolute)!r}\n"))
    assert s.data_dir == absolute


# Errors ------------------------------------------------------------------------------------------------


def test_a_given_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file") as info:
        Settings.load(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value)


def test_a_directory_or_fifo_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        Settings.load(tmp_path)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.toml")
        with pytest.raises(ConfigError, match="not a regular file"):
            Settings.load(tmp_path / "fifo.toml")  # and does not block on open


def test_malformed_toml_says_where(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[server]\nhost = "x"\nport = = 3\n')
    assert "not valid TOML" in message and "line 3" in message and "column" in message


@pytest.mark.parametrize(("text", "expected"), [
    ("[sever]\nport = 1\n", "unknown section [sever]; did you mean [server]?"),
    ("[[flow]]\nfile = 'x.py'\n", "unknown key flow; did you mean [[flows]]?"),
    ("data_dri = 'x'\n", "unknown key data_dri; did you mean data_dir?"),
    ("[server]\nprot = 1\n", "unknown key [server].prot; did you mean [server].port?"),
    ("[batch]\nspark_confs = {}\n", "unknown key [batch].spark_confs; did you mean [batch].spark_conf?"),
    ("port = 8470\n", "unknown key port; port belongs in [server]"),
    ("[server]\ndata_dir = 'x'\n", "unknown key [server].data_dir; data_dir belongs at the top of the file"),
    ("[log]\nzzz = 1\n", "unknown key [log].zzz (known keys: partitions, fsync, fsync_interval_ms, segment_bytes)"),
    ("[[flows]]\nfile = 'f.py'\narch = 'kappa'\n", "unknown key flows[0].arch; did you mean flows[0].architecture?"),
])
def test_unknown_sections_and_keys(tmp_path: Path, text: str, expected: str) -> None:
    flow_files(tmp_path, "f.py")
    assert expected in load_error(tmp_path, text)


@pytest.mark.parametrize(("text", "expected"), [
    ("data_dir = 5\n", "data_dir must be a string, got 5 (an integer)"),
    ("server = 5\n", "[server] must be a table, got 5 (an integer)"),
    ('[server]\nport = "8470"\n', "[server].port must be an integer, got '8470' (a string)"),
    ("[server]\nport = true\n", "[server].port must be an integer, got True (a boolean)"),
    ("[server]\nport = 8470.0\n", "[server].port must be an integer, got 8470.0 (a float)"),
    ("[server]\nhost = 127\n", "[server].host must be a string, got 127 (an integer)"),
    ("[log]\npartitions = false\n", "[log].partitions must be an integer, got False (a boolean)"),
    ("[stream]\nmax_lag_records = [1]\n", "[stream].max_lag_records must be an integer, got an array of 1 item(s)"),
    ("[batch]\nevery_s = true\n", "[batch].every_s must be a number, got True (a boolean)"),
    ("[batch]\nworkers = 1.5\n", "[batch].workers must be an integer, got 1.5 (a float)"),
    ('[batch]\nspark_conf = "x"\n', "[batch].spark_conf must be a table of strings, got 'x' (a string)"),
    ("[batch]\nspark_conf = { a = 1 }\n", "[batch].spark_conf.a must be a string"),
    ('[reprocess]\nkeep_old = "yes"\n', "[reprocess].keep_old must be true or false, got 'yes' (a string)"),
    ("[reprocess]\ngrace_s = 1979-05-27\n", "[reprocess].grace_s must be a number, got datetime.date(1979, 5, 27)"),
    ('flows = "x.py"\n', "flows must be an array of tables ([[flows]] entries), got 'x.py' (a string)"),
    ("[flows]\nfile = 'x.py'\n", "flows must be an array of tables ([[flows]] entries), got a table"),
    ("flows = [1]\n", "flows[0] must be a table, got 1 (an integer)"),
    ("[[flows]]\nfile = 1\n", "flows[0].file must be a string, got 1 (an integer)"),
    ("[[flows]]\nfile = 'f.py'\nbatch_every_s = '5'\n", "flows[0].batch_every_s must be a number, got '5'"),
])
def test_wrong_types(tmp_path: Path, text: str, expected: str) -> None:
    flow_files(tmp_path, "f.py")
    assert expected in load_error(tmp_path, text)


@pytest.mark.parametrize(("text", "expected"), [
    ("[server]\nport = -1\n", "[server].port must be between 0 (any free port) and 65535, got -1"),
    ("[server]\nport = 65536\n", "[server].port must be between 0 (any free port) and 65535, got 65536"),
    ('[server]\nhost = ""\n', "[server].host must be an address or a host name, got ''"),
    ('[server]\nhost = "a b"\n', "[server].host must be an address or a host name, got 'a b'"),
    ("[server]\nmax_body_bytes = 0\n", "[server].max_body_bytes must be > 0, got 0"),
    ("[server]\nmax_events_per_request = -1\n", "[server].max_events_per_request must be > 0, got -1"),
    ("[server]\nmax_pending_bytes = 0\n", "[server].max_pending_bytes must be > 0, got 0"),
    ("[server]\nmax_body_bytes = 4096\nmax_pending_bytes = 4095\n",
     "[server].max_pending_bytes must be at least max_body_bytes (4096) so that one body fits, got 4095"),
    ("[limits]\nmax_connections = 0\n", "[limits].max_connections must be > 0, got 0"),
    ("[limits]\nbody_timeout_s = 0\n", "[limits].body_timeout_s must be a finite number > 0, got 0.0"),
    ("[limits]\ndevice_events_per_s = -1\n", "[limits].device_events_per_s must be a finite number >= 0, got -1.0"),
    ("[limits]\ndead_letter_bytes = -1\n", "[limits].dead_letter_bytes must be >= 0, got -1"),
    ("[log]\npartitions = 0\n", "[log].partitions must be between 1 and 1024, got 0"),
    ("[log]\nsegment_bytes = 100\n", "[log].fsync_interval_ms must be > 0 and segment_bytes >= 4096; "
                                     "found segment_bytes = 100"),
    ("[stream]\nmax_batch_records = 0\n", "[stream].batch_interval_ms must be >= 0 and max_batch_records > 0; "
                                          "found max_batch_records = 0"),
    ("[stream]\nmax_lag_records = 0\n", "[stream].max_lag_records must be > 0, got 0"),
    ("[batch]\nevery_s = -1\n", "[batch].every_s must be a finite number >= 0, got -1.0"),
    ("[batch]\nevery_s = nan\n", "[batch].every_s must be a finite number >= 0, got nan"),
    ("[batch]\nevery_s = inf\n", "[batch].every_s must be a finite number >= 0, got inf"),
    ("[batch]\nworkers = 0\n", "[batch].workers must be > 0, got 0"),
    ("[reprocess]\ngrace_s = -0.5\n", "[reprocess].grace_s must be a finite number >= 0, got -0.5"),
    ("[[flows]]\nfile = 'f.py'\nbatch_every_s = -3\n", "flows[0].batch_every_s must be a finite number >= 0"),
])
def test_out_of_range(tmp_path: Path, text: str, expected: str) -> None:
    flow_files(tmp_path, "f.py")
    assert expected in load_error(tmp_path, text)


@pytest.mark.parametrize(("text", "expected"), [
    ('[server]\nauth = "basic"\n', "[server].auth must be one of auto, tokens, none, got 'basic'"),
    ('[log]\nfsync = "always"\n', "[log].fsync must be one of batch, interval, never, got 'always'"),
    ('[batch]\nengine = "flink"\n', "[batch].engine must be one of local, spark, got 'flink'"),
    ("[[flows]]\nfile = 'f.py'\narchitecture = 'kapa'\n", "flows[0].architecture must be one of lambda, kappa"),
])
def test_unknown_enum_values(tmp_path: Path, text: str, expected: str) -> None:
    flow_files(tmp_path, "f.py")
    assert expected in load_error(tmp_path, text)


def test_flow_errors(tmp_path: Path) -> None:
    flow_files(tmp_path, "f.py", "sub/g.py")
    message = load_error(tmp_path, "[[flows]]\nfile = 'f.py'\n[[flows]]\narchitecture = 'kappa'\n")
    assert "flows[1] has no file" in message
    message = load_error(tmp_path, "[[flows]]\nfile = 'missing.py'\n")
    assert "flows[0].file does not exist" in message and str(tmp_path / "missing.py") in message
    assert "flows[0].file is not a file" in load_error(tmp_path, "[[flows]]\nfile = 'sub'\n")
    message = load_error(tmp_path, "[[flows]]\nfile = 'sub/g.py'\n[[flows]]\nfile = 'f.py'\n"
                                   "[[flows]]\nfile = './sub/../sub/g.py'\n")
    assert "flows[2].file names the same file as flows[0].file" in message
    message = load_error(tmp_path, "[[flows]]\nfile = 'f.py'\narchitecture = 'kappa'\nbatch_every_s = 5\n")
    assert "flows[0].batch_every_s applies to lambda flows only" in message
    assert "flows[0].file must be a path, got ''" in load_error(tmp_path, "[[flows]]\nfile = ''\n")


def test_paths_with_control_characters_or_a_tilde(tmp_path: Path) -> None:
    assert "data_dir must be a path, got 'a\\x00b'" in load_error(tmp_path, 'data_dir = "a\\u0000b"\n')
    assert "flows[0].file must be a path" in load_error(tmp_path, '[[flows]]\nfile = "f\\u0000.py"\n')
    assert "data_dir must not start with ~ (it is not expanded)" in load_error(tmp_path, 'data_dir = "~/data"\n')


def test_messages_name_the_file_as_given(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[server]\nport = -1\n", name="prod.toml")
    assert message == (f"{tmp_path / 'prod.toml'}: [server].port must be between 0 (any free port) and 65535, "
                       "got -1 (an integer)")


# Auth -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "needs_tokens"), [
    ("0.0.0.0", True),
    ("127.0.0.1", False),
    ("::1", False),
    ("[::1]", False),
    ("localhost", False),
    ("LOCALHOST.", False),
    ("127.8.9.10", False),
    ("::ffff:127.0.0.1", False),
    ("::", True),
    ("192.168.1.20", True),
    ("10.0.0.1", True),
    ("example.com", True),
    ("localhost.example.com", True),
])
def test_auth_auto_asks_for_tokens_off_loopback(host: str, needs_tokens: bool) -> None:
    assert is_loopback(host) is not needs_tokens
    assert ServerSettings(host=host).auth_enabled is needs_tokens
    assert ServerSettings(host=host, auth="tokens").auth_enabled is True
    assert ServerSettings(host=host, auth="none").auth_enabled is False


def test_auth_from_a_file(tmp_path: Path) -> None:
    assert Settings.load(write(tmp_path, '[server]\nhost = "0.0.0.0"\n')).server.auth_enabled
    assert not Settings.load(write(tmp_path, '[server]\nhost = "::1"\n')).server.auth_enabled


# Overrides from the command line -------------------------------------------------------------------------


def test_with_overrides_none_keeps_everything(tmp_path: Path) -> None:
    flow_files(tmp_path, "flows/top10.py", "flows/readings.py")
    s = Settings.load(write(tmp_path, FULL))
    assert with_overrides(s) == s
    assert with_overrides(s, host=None, port=None, data_dir=None, flows=None, auth=None) == s


def test_with_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flow_files(tmp_path, "flows/top10.py", "flows/readings.py", "other.py")
    s = Settings.load(write(tmp_path, FULL))
    monkeypatch.chdir(tmp_path / "flows")
    o = with_overrides(s, host="127.0.0.1", port=1234, auth="auto", data_dir="here",
                       flows=["top10.py", Path("../other.py")])
    assert (o.server.host, o.server.port, o.server.auth, o.server.auth_enabled) == ("127.0.0.1", 1234, "auto", False)
    assert o.server.max_body_bytes == 1024, "the other server settings are kept"
    assert o.data_dir == tmp_path / "flows" / "here"
    assert o.flows == (
        FlowSettings(file=(tmp_path / "flows/top10.py").resolve(), architecture="kappa"),  # as configured
        FlowSettings(file=(tmp_path / "other.py").resolve(), architecture="lambda"),
    )
    assert (o.log, o.stream, o.batch, o.reprocess, o.source) == (s.log, s.stream, s.batch, s.reprocess, s.source)
    assert with_overrides(s, port=80).server.host == "0.0.0.0"


def test_with_overrides_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    flow_files(tmp_path, "f.py")
    s = Settings()
    with pytest.raises(ConfigError, match="port must be between 0 \\(any free port\\) and 65535, got -1"):
        with_overrides(s, port=-1)
    with pytest.raises(ConfigError, match="auth must be one of auto, tokens, none"):
        with_overrides(s, auth="open")
    with pytest.raises(ConfigError, match=r"flow file 'nope\.py' does not exist"):
        with_overrides(s, flows=["nope.py"])
    with pytest.raises(ConfigError, match="is listed twice"):
        with_overrides(s, flows=["f.py", "./f.py"])
    with pytest.raises(ConfigError, match="max_lag_records must be > 0"):
        s.replace(max_lag_records=0)


# Hostile input ---------------------------------------------------------------------------------------------


def test_a_huge_junk_file_is_refused_unparsed(tmp_path: Path) -> None:
    junk = random.Random(7).randbytes(5 * 1024 * 1024)
    message = load_error(tmp_path, junk)
    assert f"larger than {MAX_CONFIG_BYTES} bytes" in message


def test_junk_below_the_size_limit(tmp_path: Path) -> None:
    rnd = random.Random(11)
    assert "not UTF-8 text" in load_error(tmp_path, b"\xff" + rnd.randbytes(200_000))
    printable = "".join(rnd.choice("abc=[]{}\"'.,#\n 0123") for _ in range(200_000))
    assert "not valid TOML" in load_error(tmp_path, "x = " + printable)


def test_nul_bytes_and_invalid_utf8(tmp_path: Path) -> None:
    message = load_error(tmp_path, b'[server]\nhost = "a\x00b"\n')
    assert "not valid TOML" in message and "line 2" in message
    message = load_error(tmp_path, b'[server]\nhost = "caf\xe9"\n')
    assert "not UTF-8 text (byte 0xe9 at line 2)" in message
    s = Settings.load(write(tmp_path, b'\xef\xbb\xbf[server]\nhost = "caf\xc3\xa9"\n'))  # a BOM is fine
    assert s.server.host == "café"


@pytest.mark.parametrize("nested", [
    "x = " + "[" * 20_000 + "]" * 20_000,
    "x = " + "{a = " * 20_000 + "1" + "}" * 20_000,
    "[batch]\nspark_conf = " + "{a = " * 20_000 + "'1'" + "}" * 20_000,
])
def test_deeply_nested_values(tmp_path: Path, nested: str) -> None:
    assert "nested too deeply" in load_error(tmp_path, nested + "\n")


def test_deeply_nested_tables(tmp_path: Path) -> None:
    # tomllib takes quadratic time in the depth of a dotted key: refused before parsing
    message = load_error(tmp_path, "[server]\nport" + ".a" * 100_000 + " = 1\n")
    assert "line 2 has 100000 dots, more than 64" in message
    assert "line 1 has 65 dots" in load_error(tmp_path, "[" + ".".join(["deep"] * 66) + "]\n")
    # comment lines are not keys
    assert Settings.load(write(tmp_path, "# " + "." * 1000 + "\n[server]\nport = 1\n")).server.port == 1

    depth = 60  # below the limit: whatever the nesting, the messages stay short and right
    message = load_error(tmp_path, "[server]\nport" + ".a" * depth + " = 1\n")
    assert "[server].port must be an integer, got a table" in message
    message = load_error(tmp_path, "[" + ".".join(["deep"] * depth) + "]\nx = 1\n")
    assert "unknown section [deep]" in message
    message = load_error(tmp_path, "[server." + ".".join(["deep"] * depth) + "]\n")
    assert "unknown key [server].deep" in message
    s = Settings.load(write(tmp_path, "[batch.spark_conf]\n" + "a." * depth + "b = 'x'\n"))
    assert s.batch.spark_conf == {"a." * depth + "b": "x"}


def test_the_largest_nesting_allowed_loads_quickly_enough(tmp_path: Path) -> None:
    lines: list[str] = []
    size = 0
    while size < MAX_CONFIG_BYTES - 200:
        lines.append(f"k{len(lines)}" + ".a" * 63 + " = 'x'\n")
        size += len(lines[-1])
    s = Settings.load(write(tmp_path, "[batch.spark_conf]\n" + "".join(lines)))  # under a second or two
    assert len(s.batch.spark_conf) == len(lines)


def test_a_huge_key_is_cut_in_the_message(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[server]\n" + "k" * 200_000 + " = 1\n")
    assert "unknown key [server].'kkkk" in message and message.count("k") < 200
