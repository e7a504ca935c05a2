"""The connector tier's targets: the F5 iControl REST mock (always), the Debian daemons (when
installed; skipped with the command that installs them), and what `target up --connectors`
reports when one is missing."""

from __future__ import annotations

import json
import os
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from cryptography import x509

from tests.loopback import free_port
from workbench.errors import WorkbenchError
from workbench.target import connectors

F5_OFFSET = connectors.TYPES.index("f5")


def _group_left(entry: dict) -> list[int]:
    """Processes still in the process group a connector was started in."""
    left = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == entry["pid"] and \
                    process.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(process.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return left


@pytest.fixture(scope="module")
def f5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, dict]]:
    """The F5 mock as `target up --connectors` starts it: its URL, CA file and entry."""
    state = tmp_path_factory.mktemp("f5state")
    try:
        info = connectors.up(state, first_port=free_port() - F5_OFFSET, types=("f5",))
        entry = info["targets"]["f5"]
        yield entry["url"], info["ca_file"], entry
    finally:
        connectors.down(state)
    assert not _group_left(entry)


@pytest.fixture()
def bigip(f5) -> Iterator[httpx.Client]:
    url, ca_file, _ = f5
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=ca_file),
                      timeout=10.0) as client:
        yield client


def _login(client: httpx.Client) -> dict[str, str]:
    response = client.post("/mgmt/shared/authn/login", json={
        "username": "admin", "password": "secret", "loginProviderName": "tmos"})
    assert response.status_code == 200
    return {"X-F5-Auth-Token": response.json()["token"]["token"]}


def _upload(client: httpx.Client, auth: dict, name: str, data: bytes) -> httpx.Response:
    return client.post(f"/mgmt/shared/file-transfer/uploads/{name}", content=data, headers=auth | {
        "Content-Type": "application/octet-stream",
        "Content-Range": f"0-{len(data) - 1}/{len(data)}"})


def test_the_f5_mock_takes_the_connectors_whole_deployment_in_its_order(bigip):
    """Login, two uploads, two installs, a transaction holding the profile change, the commit,
    then the profile read back (certctl's DeployCertificate and ValidateDeployment)."""
    auth = _login(bigip)
    for name in ("certctl-cert-1.pem", "certctl-key-1.pem"):
        assert _upload(bigip, auth, name, b"-----BEGIN PEM-----\n").status_code == 200
    for kind, name in (("cert", "certctl-cert-1"), ("key", "certctl-key-1")):
        response = bigip.post(f"/mgmt/tm/sys/crypto/{kind}", headers=auth, json={
            "command": "install", "name": name,
            "from-local-file": f"/var/config/rest/downloads/{name}.pem"})
        assert response.status_code == 200, response.text
    created = bigip.post("/mgmt/tm/transaction", headers=auth, json={})
    trans_id = created.json()["transId"]
    assert created.status_code == 200 and isinstance(trans_id, int)  # a JSON number, as BIG-IP
    path = "/mgmt/tm/ltm/profile/client-ssl/~Common~clientssl"
    queued = bigip.patch(path, json={"cert": "/Common/certctl-cert-1",
                                     "key": "/Common/certctl-key-1"},
                         headers=auth | {"X-F5-REST-Overriding-Collection":
                                         f"/mgmt/tm/transaction/{trans_id}"})
    assert queued.status_code == 200
    assert bigip.get(path, headers=auth).json()["cert"] == "/Common/default.crt"  # not yet
    committed = bigip.patch(f"/mgmt/tm/transaction/{trans_id}", headers=auth,
                            json={"state": "VALIDATING"})
    assert committed.status_code == 200 and committed.json()["state"] == "COMPLETED"
    profile = bigip.get(path, headers=auth).json()
    assert (profile["cert"], profile["key"]) == ("/Common/certctl-cert-1", "/Common/certctl-key-1")
    assert bigip.delete("/mgmt/tm/sys/crypto/cert/~Common~certctl-cert-1",
                        headers=auth).status_code == 200


def test_the_f5_mock_refuses_what_a_bigip_refuses(bigip):
    auth = _login(bigip)
    assert bigip.get("/healthz").text == "ok"  # the harness's probe needs no token
    assert bigip.post("/mgmt/tm/transaction", json={}).status_code == 401  # no token
    assert bigip.post("/mgmt/tm/transaction", json={},
                      headers={"X-F5-Auth-Token": "stale"}).status_code == 401
    assert bigip.post("/mgmt/shared/authn/login", json={"username": "admin"}).status_code == 401
    no_range = bigip.post("/mgmt/shared/file-transfer/uploads/x.pem", content=b"abc",
                          headers=auth)
    assert no_range.status_code == 400 and "Content-Range" in no_range.json()["message"]
    wrong_range = bigip.post("/mgmt/shared/file-transfer/uploads/x.pem", content=b"abc",
                             headers=auth | {"Content-Range": "0-9/10"})
    assert wrong_range.status_code == 400
    never_uploaded = bigip.post("/mgmt/tm/sys/crypto/cert", headers=auth, json={
        "command": "install", "name": "ghost",
        "from-local-file": "/var/config/rest/downloads/ghost.pem"})
    assert never_uploaded.status_code == 400
    assert bigip.patch("/mgmt/tm/transaction/999", headers=auth,
                       json={"state": "VALIDATING"}).status_code == 404
    # a transaction naming an object never installed changes nothing (all or nothing)
    path = "/mgmt/tm/ltm/profile/client-ssl/~Common~atomic"
    assert _upload(bigip, auth, "good.pem", b"pem").status_code == 200
    assert bigip.post("/mgmt/tm/sys/crypto/cert", headers=auth, json={
        "command": "install", "name": "good",
        "from-local-file": "/var/config/rest/downloads/good.pem"}).status_code == 200
    trans_id = bigip.post("/mgmt/tm/transaction", headers=auth, json={}).json()["transId"]
    over = {"X-F5-REST-Overriding-Collection": f"/mgmt/tm/transaction/{trans_id}"}
    assert bigip.patch(path, headers=auth | over,
                       json={"cert": "/Common/good", "key": "/Common/missing"}).status_code == 200
    failed = bigip.patch(f"/mgmt/tm/transaction/{trans_id}", headers=auth,
                         json={"state": "VALIDATING"})
    assert failed.status_code == 400 and "/Common/missing" in failed.json()["message"]
    assert bigip.get(path, headers=auth).status_code == 404  # never applied
    state = bigip.get("/mock/state").json()
    assert trans_id not in state["open_transactions"] and "/Common/good" in state["certs"]


def test_the_f5_target_is_served_by_the_workbench_with_a_certificate_of_its_ca(f5, tmp_path):
    url, ca_file, entry = f5
    assert entry["version"] == "workbench-f5mock" and entry["path"] == "/healthz"
    folder = Path(entry["folder"])
    assert stat.S_IMODE((folder / "key.pem").stat().st_mode) == 0o600
    served = x509.load_pem_x509_certificate(
        ssl.get_server_certificate(("127.0.0.1", int(url.rsplit(":", 1)[1]))).encode())
    ca = x509.load_pem_x509_certificate(Path(ca_file).read_bytes())
    served.verify_directly_issued_by(ca)
    assert "PRIVATE KEY" not in (folder.parent / connectors.INFO_FILE).read_text()


@pytest.mark.parametrize("target_type", ["nginx", "apache", "haproxy"])
def test_each_installed_daemon_serves_the_harness_page_and_stops_with_its_workers(
        target_type, tmp_path):
    daemon = connectors.DAEMONS[target_type]
    if daemon.find() is None:
        pytest.skip(f"{target_type} is not installed: "
                    f"{connectors.install_command([daemon.package])}")
    first = free_port() - connectors.TYPES.index(target_type)
    try:
        info = connectors.up(tmp_path, first_port=first, types=(target_type,))
        entry = info["targets"][target_type]
        url, ca_file, version = connectors.target_for(target_type, tmp_path)
        response = httpx.get(url + "/", verify=ssl.create_default_context(cafile=ca_file))
        assert response.status_code == 200 and response.text == "ok\n"
        assert version == entry["version"] and version != "unknown"
        again = connectors.up(tmp_path, first_port=first, types=(target_type,))
        assert again["targets"][target_type]["pid"] == entry["pid"]  # idempotent
        for secret in ("key.pem", "bundle.pem"):
            path = Path(entry["folder"]) / secret
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        stopped = connectors.down(tmp_path)
    assert stopped == [target_type]
    assert not _group_left(entry)
    with pytest.raises(WorkbenchError, match="target up --connectors"):
        connectors.target_for(target_type, tmp_path)


def test_a_missing_daemon_is_named_with_the_command_that_installs_it(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.setattr(connectors.Daemon, "find", lambda self: None if self.package else "x")
    info = connectors.up(tmp_path, first_port=free_port(), types=("nginx", "haproxy"))
    assert info["targets"] == {}
    assert info["missing"] == {"nginx": "nginx", "haproxy": "haproxy"}
    assert info["install"] == "apt-get install -y haproxy nginx"
    connectors.print_up(info)
    err = capsys.readouterr().err
    assert "nginx: not installed" in err and "apt-get install -y haproxy nginx" in err
    with pytest.raises(WorkbenchError, match=r"apt-get install -y nginx"):
        connectors.target_for("nginx", tmp_path)
    assert connectors.status(tmp_path)["haproxy"]["missing"] == "apt-get install -y haproxy"
    assert json.loads((tmp_path / "connectors" / connectors.INFO_FILE).read_text())[
        "missing"] == info["missing"]


def test_a_ca_without_its_key_is_refused_with_the_way_to_a_new_one(tmp_path):
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_text("an older workbench's CA\n")
    with pytest.raises(WorkbenchError, match="made without its key.*target down"):
        connectors.up(tmp_path, first_port=free_port(), types=("f5",))
    assert connectors.read_info(tmp_path) is None


def test_a_daemon_elsewhere_is_reached_by_url_and_named_by_its_server_header(f5):
    from workbench import scenarios

    url, ca_file, _ = f5
    scenario = scenarios.get("connector_handshake")
    params = scenario.params_for("smoke", {"target_type": "f5"})
    target = scenario.target(params, url + "/", ca_file, False)
    assert (target.url, target.embedded, scenario.token(target)) == (url, False, "")
    identity = scenario.check_target(target, "", params)
    assert identity["kind"] == "f5" and "aiohttp" in identity["version"]
    assert identity["warnings"] and not identity["standin"]
    with pytest.raises(WorkbenchError, match="TLS verification of .* failed"):
        scenario.check_target(scenario.target(params, url, None, False), "", params)


def test_target_up_takes_connectors_as_a_flag():
    from workbench.cli import build_parser

    assert build_parser().parse_args(["target", "up", "--connectors"]).connectors is True
    assert build_parser().parse_args(["target", "up"]).connectors is False
