"""A new connection per request (connection_per_request): each request its own TCP connection
and TLS handshake, the phases in requests.parquet, failures still one row each."""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.loopback import free_port
from workbench.analyse import analysis
from workbench.driver import DriveSpec, RequestTemplate, run_shard
from workbench.driver.recorder import PHASE_COLUMNS
from workbench.errors import WorkbenchError
from workbench.target import tlsca


class CountingTlsServer:
    """Answers every request ``ok`` after ``delay_s``, counting the connections it accepted and
    the requests that asked it to close."""

    def __init__(self, tls_dir: Path, delay_s: float = 0.0) -> None:
        self.ca_file, _ = tlsca.ensure_ca(tls_dir)
        cert, key = tlsca.issue(tls_dir, "localhost", tls_dir / "s.pem", tls_dir / "s-key.pem")
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.delay_s = delay_s
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.connections = self.close_asked = 0
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True).start()
        started.wait(10)

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(asyncio.start_server(
            self._handle, "127.0.0.1", self.port, ssl=self.context))
        started.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.close_asked += b"\r\nconnection: close" in head.lower()
                await asyncio.sleep(self.delay_s)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


def _drive(tmp_path: Path, url: str, ca_file: Path, **kwargs) -> tuple[dict, np.ndarray]:
    spec = DriveSpec(url, (RequestTemplate("GET", "/", "nginx"),), ca_file=str(ca_file),
                     connection_per_request=True, **{"rate": 50.0, "duration_s": 1.0} | kwargs)
    spec.validate()
    report = run_shard(spec, tmp_path / "run")
    return report, pq.read_table(tmp_path / "run" / "requests.parquet")


def test_every_request_opens_its_own_connection_and_times_its_phases(tmp_path):
    server = CountingTlsServer(tmp_path / "tls")
    report, table = _drive(tmp_path, server.url, server.ca_file)
    assert report["scheduled"] == report["completed"] == 50 == table.num_rows
    assert server.connections == 50 == server.close_asked  # none reused, each told to close
    assert report["connections"]["opened"] == 50
    assert report["engine"] == "workbench-http1-per-request"
    assert table.column_names[-3:] == list(PHASE_COLUMNS)
    send, connected, tls_done, first_byte, end = (
        table[c].to_numpy() for c in ("send_ns", *PHASE_COLUMNS, "end_ns"))
    assert (send <= connected).all() and (connected <= tls_done).all()
    assert (tls_done <= first_byte).all() and (first_byte <= end).all()
    df = analysis.load_requests(tmp_path / "run")
    phases = analysis.phases(df)
    assert list(phases.loc["nginx"].index) == list(analysis.PHASES)
    assert (phases["count"] == 50).all()
    assert (phases.loc[("nginx", "total"), "p50"]
            >= phases.loc[("nginx", "tls"), "p50"] > 0)


def test_a_refused_or_untrusted_connection_is_one_row_with_the_phases_it_reached(tmp_path):
    server = CountingTlsServer(tmp_path / "tls")
    other_ca, _ = tlsca.ensure_ca(tmp_path / "other")
    report, table = _drive(tmp_path, server.url, other_ca, rate=20.0)  # not our CA: TLS fails
    assert report["failed"] == report["scheduled"] == table.num_rows == 20
    assert set(table["error"].to_pylist()) == {"tls"}
    assert table["connected_ns"].null_count == 0  # TCP connected
    assert table["tls_done_ns"].null_count == table["first_byte_ns"].null_count == 20
    refused = free_port()
    report, table = _drive(tmp_path, f"https://127.0.0.1:{refused}", server.ca_file, rate=20.0)
    assert set(table["error"].to_pylist()) == {"connect"} and table.num_rows == 20
    assert all(table[c].null_count == 20 for c in PHASE_COLUMNS)


def test_dropped_arrivals_keep_the_phase_columns_aligned(tmp_path):
    server = CountingTlsServer(tmp_path / "tls", delay_s=0.2)
    report, table = _drive(tmp_path, server.url, server.ca_file, rate=100.0, max_vus=2)
    assert report["dropped"] > 0 and report["completed"] > 0
    assert report["scheduled"] == report["completed"] + report["failed"] + report["dropped"]
    error = np.asarray(table["error"].to_pylist())
    first_byte = table["first_byte_ns"]
    assert first_byte.null_count == int((error != "").sum())  # dropped rows: no phases
    assert server.connections == report["completed"]


@pytest.mark.parametrize("change, needle", [
    ({"protocol": "h2"}, "HTTP/1.1 only"),
    ({"connection_per_client": True}, "exclude each other"),
])
def test_a_connection_per_request_refuses_what_it_cannot_time(change, needle):
    spec = DriveSpec("https://127.0.0.1:1", (RequestTemplate("GET", "/", "x"),), rate=1.0,
                     duration_s=1.0, connection_per_request=True, **change)
    with pytest.raises(WorkbenchError, match=needle):
        spec.validate()
