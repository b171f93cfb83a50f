"""A TFDS task without a network fails in seconds, in one line, and leaves nothing behind.

Issue 28, item 1: `load_task("T0")` offline spent 3.5 minutes in urllib3's retries before a
RuntimeError, `distances --tasks T0 T1` printed a 54-frame traceback, and each try left
`downloads/mnist/*.tmp.*` folders. Here the network refuses at once (every socket connect
raises ConnectionRefusedError after a resolver that answers with the loopback address), so
the tests measure the library's own waiting, not a real timeout.
"""

import socket
import time

import pytest

from ldnas_jax import cli, data
from ldnas_jax.data import sources, tfds_loader

tfds = pytest.importorskip("tensorflow_datasets")
from tensorflow_datasets.core import constants  # noqa: E402  (after the skip)
from tensorflow_datasets.core.download import downloader  # noqa: E402

# Generous for a loaded 2-core machine; before the fix the same call took 205 s.
FAST_S = 20.0


@pytest.fixture
def refused(monkeypatch):
    """Every name resolves to 127.0.0.1 and every TCP connect is refused; counts the connects."""
    connects = []

    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 0)))]

    def connect(self, address):
        connects.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return connects


@pytest.fixture
def tfds_home(tmp_path, monkeypatch):
    """TFDS's default data directory, empty, and the built-in TFDS sources made afresh."""
    home = tmp_path / "tensorflow_datasets"
    monkeypatch.setattr(constants, "DATA_DIR", str(home))
    for name in ("mnist", "cifar10"):  # another test may have pointed them at local files
        monkeypatch.delitem(sources._SOURCES, name, raising=False)
    return home


def partial_downloads(home):
    return sorted(home.glob("**/*.tmp.*")) if home.exists() else []


@pytest.mark.parametrize(
    "task, name, hint",
    [("T0", "mnist", "`--mnist-dir DIR`"), ("T4", "cifar10", "`--npz-source cifar10=PATH`")],
)
def test_a_tfds_task_offline_fails_at_once_with_one_line(refused, tfds_home, task, name, hint):
    started = time.monotonic()
    with pytest.raises(data.DataSourceError) as raised:
        data.load_task(task)
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert elapsed < FAST_S, f"load_task({task!r}) took {elapsed:.1f} s offline"
    assert isinstance(raised.value, RuntimeError)  # what tfds_source documented before
    assert "\n" not in message
    assert f"TFDS data set {name!r} is not prepared in {tfds_home}" in message
    assert "Connection refused" in message and hint in message
    assert refused, "no connection was tried: the probe did not run"
    assert not partial_downloads(tfds_home)


def test_the_probe_stops_tfds_before_its_download_manager(refused, tmp_path, monkeypatch):
    def no_download(self, *args, **kwargs):
        raise AssertionError("TFDS started downloading although no host answered")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", no_download)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", no_download)
    loader = data.tfds_source("mnist", data_dir=tmp_path / "tfds", cache=False)
    with pytest.raises(data.DataSourceError, match="cannot be downloaded"):
        loader("train")
    assert not (tmp_path / "tfds").exists() or not any((tmp_path / "tfds").rglob("*.tmp.*"))


def test_without_download_no_host_is_probed(refused, tmp_path):
    loader = data.tfds_source("mnist", data_dir=tmp_path, download=False, cache=False)
    with pytest.raises(data.DataSourceError, match="could not read TFDS data set 'mnist'"):
        loader("test")
    assert not refused


def test_a_download_that_fails_leaves_no_partial_files(refused, tmp_path, monkeypatch):
    # The hosts answer the probe, then the download itself is refused: TFDS makes a
    # `*.tmp.*` folder per file, fails, and leaves the folders; the loader removes them.
    monkeypatch.setattr(tfds_loader, "unreachable", lambda hosts, timeout=None: None)
    monkeypatch.setattr(downloader, "MAX_RETRIES", 0)  # TFDS's own 3.5 minutes of retries
    made = []
    original = downloader._Downloader._sync_download

    def sync_download(self, url, destination_path, verify=True):
        made.append(destination_path)
        return original(self, url, destination_path, verify)

    monkeypatch.setattr(downloader._Downloader, "_sync_download", sync_download)
    home = tmp_path / "tfds"
    started = time.monotonic()
    with pytest.raises(data.DataSourceError, match="could not read TFDS data set 'mnist'"):
        data.tfds_source("mnist", data_dir=home, cache=False)("train")
    assert time.monotonic() - started < FAST_S
    assert made and all(".tmp." in path.name for path in made), made
    assert not any(path.exists() for path in made)
    assert not partial_downloads(home)


def test_the_command_reports_the_offline_data_set_in_one_line(refused, tfds_home, tmp_path, capsys):
    started = time.monotonic()
    status = cli.main(["distances", "--tasks", "T0", "T1", "--out", str(tmp_path / "out")])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert status == 2 and elapsed < FAST_S
    assert err.startswith("error: TFDS data set 'mnist' is not prepared") and "\n" not in err
    assert "--mnist-dir DIR" in err and "Traceback" not in err
    assert not partial_downloads(tfds_home)


def test_unreachable_tells_a_listening_host_from_a_closed_port():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert tfds_loader.unreachable([("127.0.0.1", port)], timeout=5.0) is None
        # One answering host is enough: TFDS may use either route.
        assert tfds_loader.unreachable([("127.0.0.1", 1), ("127.0.0.1", port)], timeout=5.0) is None
    reason = tfds_loader.unreachable([("127.0.0.1", port)], timeout=5.0)
    assert reason is not None and reason.startswith(f"127.0.0.1:{port}: ")


def test_unreachable_gives_up_on_a_silent_host_after_its_timeout(monkeypatch):
    def silent(address, timeout=None):
        time.sleep(30)

    monkeypatch.setattr(socket, "create_connection", silent)
    started = time.monotonic()
    reason = tfds_loader.unreachable([("a.example", 443), ("b.example", 443)], timeout=0.3)
    assert time.monotonic() - started < 5.0
    assert reason == "a.example:443: no answer within 0.3 s"


def test_download_hosts_follow_the_proxy_settings(monkeypatch):
    for scheme in ("https", "http", "no"):
        for variable in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            monkeypatch.delenv(variable, raising=False)
    urls = ["https://data.example/a.gz", "https://data.example/b.gz", "http://other.example/c"]
    assert tfds_loader.download_hosts(urls) == [("data.example", 443), ("other.example", 80)]
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert tfds_loader.download_hosts(urls) == [("proxy.example", 3128), ("other.example", 80)]
    monkeypatch.setenv("no_proxy", "data.example")
    assert tfds_loader.download_hosts(urls)[0] == ("data.example", 443)
