"""acme_orders: scripted virtual users in the driver (a fake engine where only the engine is
faked), the scenario's parameters and preflight, and signed runs on the embedded target,
through papermill at smoke size."""

from __future__ import annotations

import asyncio
import json

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from workbench import driver, scenarios
from workbench.driver import DriveSpec, RequestTemplate, merge_reports, run_shard
from workbench.driver.scripted import Response
from workbench.errors import WorkbenchError
from workbench.run import launcher
from workbench.scenarios import acme_orders
from workbench.target import embedded, preflight

SIGNED_TAGS = ("new_account", "new_order", "order", "authz", "finalize")


# --- scripted virtual users, with a fake engine -------------------------------------------------


class HeadEngine:
    """Answers after 1 ms with the status its path names (/s/400), a head with Replay-Nonce,
    and a problem document for 4xx; records what was sent."""

    name = "fake"
    authority = "fake.test"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes | None]] = []

    def prepare(self, method, path, headers, body, want_body=False, want_head=False):
        return method, path, body, want_body and want_head

    async def start(self, warm: int = 0) -> None:
        self.loop = asyncio.get_running_loop()

    def send(self, request, done) -> None:
        method, path, body, whole = request
        assert whole  # a script always gets the body and the head
        self.sent.append((method, path, body))
        status = int(path.rsplit("/", 1)[1]) if path.startswith("/s/") else 200
        problem = status >= 400
        ctype = b"application/problem+json" if problem else b"application/json"
        payload = (b'{"type":"urn:ietf:params:acme:error:badNonce","detail":"x","status":400}'
                   if problem else b'{"ok":true}')
        head = f"HTTP/1.1 {status} X\r\nReplay-Nonce: n{len(self.sent)}\r\nX-A: 1".encode()
        self.loop.call_later(0.001, done, status, ctype, len(payload), payload, 0, head)

    async def close(self) -> None:
        pass


class CountingScript:
    def __init__(self, params: dict) -> None:
        self.fail_in = params.get("fail_in")

    async def setup(self, vu) -> None:
        if self.fail_in == "setup" and vu.index == 1:
            raise RuntimeError("no account for VU 1")
        vu.state = (await vu.request("setup", "/setup")).header("replay-nonce")

    async def iteration(self, vu) -> None:
        if self.fail_in == "iteration":
            raise KeyError("broken script")
        if self.fail_in == "server-text":  # a script passing on what the server said
            raise RuntimeError("401: \x1b]0;pwned\x07\x1b[2J\nsecond line")
        vu.timing("work", 1_500_000)
        first = await vu.request("a", f"/a/{vu.index}")
        assert first.ok and first.json() == {"ok": True} and first.header("x-a") == "1"
        await vu.request("b", "/s/400" if vu.iteration % 2 else "/b", body=b"{}",
                         headers={"X-Try": str(vu.iteration)})


def counting(params: dict) -> CountingScript:
    return CountingScript(params)


def scripted_spec(**params) -> DriveSpec:
    templates = (RequestTemplate("GET", "/setup", "setup"), RequestTemplate("GET", "/a/{vu}", "a"),
                 RequestTemplate("POST", "/b", "b", expect=(200,)))
    return DriveSpec("http://fake.test", templates, executor="constant-vus", vus=3,
                     duration_s=0.3, script="tests.test_acme_orders:counting",
                     script_params=params)


def test_scripted_vus_record_every_request_like_the_template_executors(tmp_path):
    spec = scripted_spec()
    engine = HeadEngine()
    report = run_shard(spec, tmp_path, engine=engine, handle_signals=False)
    result = merge_reports(spec, [report])
    rows = pq.read_table(tmp_path / "requests.parquet").to_pandas()
    iterations = result["iterations"]["scheduled"]
    assert result["status"] == "completed" and iterations >= 6
    assert result["scheduled"] == len(rows) == len(engine.sent) == 3 + 2 * iterations
    assert result["scheduled"] == result["completed"] + result["failed"] + result["dropped"]
    assert result["by_tag"]["setup"]["count"] == 3  # setup requests are recorded too
    b_fails = result["by_tag"]["b"]["failed"]
    assert b_fails == result["errors"]["http_4xx"] and b_fails >= 3  # odd iterations: 400
    assert result["problems"] == {"b": {"badNonce": b_fails}}
    assert result["work_ms"]["count"] == iterations and result["work_ms"]["p50"] == 1.5
    assert result["script"]["factory"] == "tests.test_acme_orders:counting"
    assert {p for m, p, _ in engine.sent if p.startswith("/a/")} == {"/a/0", "/a/1", "/a/2"}
    assert all(m == "POST" for m, p, _ in engine.sent if p in ("/b", "/s/400"))
    setup = rows[rows["tag"] == "setup"]
    assert setup["intended_ns"].max() < rows[rows["tag"] != "setup"]["intended_ns"].min()
    # a step is intended when the script asked: after the previous step ended
    for _, a in rows[rows["tag"] == "a"].iterrows():
        assert a["intended_ns"] <= a["send_ns"] <= a["end_ns"]


@pytest.mark.parametrize(("where", "needle"), [
    ("setup", "script setup failed for 1 of 3 VUs: no account for VU 1"),
    ("iteration", "script error in VU 0: KeyError: 'broken script'"),
    ("server-text", "script error in VU 0: RuntimeError: 401: \\x1b]0;pwned\\x07\\x1b[2J\\n"
                    "second line"),
])
def test_a_broken_script_fails_the_run_with_its_reason(tmp_path, where, needle):
    spec = scripted_spec(fail_in=where)
    report = run_shard(spec, tmp_path, engine=HeadEngine(), handle_signals=False)
    result = merge_reports(spec, [report])
    assert result["status"].startswith("failed") and needle in result["status"]
    assert result["scheduled"] == result["completed"] + result["failed"]
    assert not result["valid"]


def test_a_problem_is_described_without_what_a_terminal_would_run():
    body = b'{"type":"urn:ietf:params:acme:error:unauthorized","detail":"no\\u001b[2J\\nkey"}'
    said = acme_orders.describe(Response(401, "application/problem+json", body, "http_4xx",
                                         None, "unauthorized"))
    assert said == "401 unauthorized: no\\x1b[2J\\nkey"


def test_scripts_need_the_closed_loop_and_an_importable_factory():
    with pytest.raises(WorkbenchError, match="needs the constant-vus executor"):
        DriveSpec("http://x", (RequestTemplate("GET", "/", "a"),), rate=1, duration_s=1,
                  script="tests.test_acme_orders:counting").validate()
    with pytest.raises(WorkbenchError, match="cannot be loaded .*ModuleNotFoundError"):
        DriveSpec("http://x", (RequestTemplate("GET", "/", "a"),), executor="constant-vus",
                  vus=1, duration_s=1, script="workbench.nothing:here").validate()
    with pytest.raises(WorkbenchError, match="package.module:function"):
        DriveSpec("http://x", (RequestTemplate("GET", "/", "a"),), executor="constant-vus",
                  vus=1, duration_s=1, script="no colon").validate()
    spec = scripted_spec(x=1)
    assert DriveSpec.from_json(spec.to_json()) == spec


def test_a_response_reads_headers_as_received():
    head = b"HTTP/1.1 201 Created\r\nLocation: https://h:1/A/b\r\nreplay-nonce:  abc \r\nX: y"
    response = Response(201, "application/json", b"{}", "", head, None)
    assert response.header("location") == "https://h:1/A/b"
    assert response.header("Replay-Nonce") == "abc" and response.header("x") == "y"
    assert response.header("missing") is None and response.ok
    assert Response(0, None, b"", "timeout", None, None).header("location") is None


# --- the scenario ------------------------------------------------------------------------------


def test_templates_follow_the_steps_and_the_script_gets_its_parameters():
    spec = scenarios.get("acme_orders")
    params = spec.params_for("smoke", {"finalize": True, "alg": "EdDSA"})
    tags = [t.tag for t in spec.templates(params)]
    assert tags == ["new_nonce", "new_account", "new_order", "order", "authz", "finalize"]
    bare = params | {"fetch_order": False, "fetch_authz": False, "finalize": False}
    assert [t.tag for t in spec.templates(bare)] == ["new_nonce", "new_account", "new_order"]
    settings = spec.executor_settings(params)
    assert settings["script"] == "workbench.scenarios.acme_orders:script"
    assert settings["script_params"] == {"profile_id": "prof-standard-tls", "alg": "EdDSA",
                                         "fetch_order": True, "fetch_authz": True,
                                         "finalize": True}
    probes = spec.preflight_args(params)["probes"]
    assert len(probes) == 2 and probes[1](None, "token") == [acme_orders.FINALIZE_WARNING]
    assert len(spec.preflight_args(bare)["probes"]) == 1  # the signed probe only


@pytest.mark.parametrize(("params", "needle"), [
    ({"alg": "ES384"}, "alg must be one of RS256, ES256, EdDSA"),
    ({"finalize": "yes"}, "finalize must be true or false"),
    ({"fetch_order": 1}, "fetch_order must be true or false"),
])
def test_bad_parameters_are_refused_by_name(params, needle):
    with pytest.raises(WorkbenchError, match=needle):
        scenarios.get("acme_orders").params_for("smoke", params)


def test_problem_and_cost_tables_read_the_result():
    result = {"problems": {"finalize": {"serverInternal": 3}, "new_order": {"badNonce": 1}},
              "sign_ms": {"count": 9, "mean": 0.2, "p50": 0.1, "p90": 0.3, "p99": 0.4,
                          "max": 0.5},
              "script": {"timing_histograms": {"sign": "x"}}}
    problems = acme_orders.PROBLEMS.table(result)
    assert problems.to_dict("records") == [
        {"endpoint": "finalize", "type": "serverInternal", "count": 3, "jws": False},
        {"endpoint": "new_order", "type": "badNonce", "count": 1, "jws": True}]
    costs = acme_orders.CLIENT_COSTS.table(result)
    assert list(costs.index) == ["sign"] and costs.loc["sign", "count"] == 9
    assert acme_orders.PROBLEMS.line(result, "new_order") == "problems badNonce=1"


def test_the_reset_removes_only_the_scenarios_accounts(embedded_target):
    engine = sa.create_engine(embedded_target.dsn)
    with engine.begin() as conn:
        for account_id, contact in (("acme-acc-loadtest-x", acme_orders.CONTACT),
                                    ("acme-acc-prod-x", "mailto:ops@example.test")):
            conn.execute(sa.text(
                "INSERT INTO acme_accounts (account_id, jwk_thumbprint, jwk_pem, contact, status,"
                " profile_id) VALUES (:a, :a, 'pem', ARRAY[:c], 'valid', 'prof-standard-tls')"),
                {"a": account_id, "c": contact})
            conn.execute(sa.text(
                "INSERT INTO acme_orders (order_id, account_id, identifiers, status, expires_at)"
                " VALUES (:o, :a, '[]', 'ready', now())"),
                {"o": account_id + "-o", "a": account_id})
    try:
        spec = scenarios.get("acme_orders")
        assert spec.seed(embedded_target.dsn, spec.defaults("smoke"))["acme_accounts"] == 0
        with engine.connect() as conn:
            left = conn.execute(sa.text("SELECT account_id FROM acme_orders WHERE order_id"
                                        " LIKE 'acme-acc-%'")).scalars().all()
        assert left == ["acme-acc-prod-x"]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM acme_orders WHERE account_id = 'acme-acc-prod-x'"))
            conn.execute(sa.text("DELETE FROM acme_accounts WHERE account_id = 'acme-acc-prod-x'"))
        engine.dispose()


def test_preflight_explains_finalize_when_it_is_asked_for(embedded_env):
    token = embedded.read_token()
    spec = scenarios.get("acme_orders")
    checks = spec.preflight_args(spec.params_for("smoke", {"finalize": True}))
    warnings = preflight.preflight(preflight.resolve_target(), token, **checks)["warnings"]
    assert warnings == [acme_orders.FINALIZE_WARNING]
    assert "500 serverInternal" in warnings[0] and "processing" in warnings[0]


# --- signed runs on the embedded target ---------------------------------------------------------


def test_acme_orders_smoke_through_papermill_signs_every_request_right(
        embedded_env, embedded_target_state, monkeypatch):
    token = embedded.read_token(embedded_target_state)
    monkeypatch.setenv("CERTCTL_TOKEN", token)  # as an operator would; must never be written
    run_dir, code = launcher.execute("acme_orders", "smoke", overrides={"duration_s": 2.0})
    result = json.loads((run_dir / "result.json").read_text())
    by_tag = {tag: stats["count"] for tag, stats in result["by_tag"].items()}
    assert result["status"] == "completed" and result["failed"] == 0
    assert result["problems"] == {}  # no badNonce, unauthorized or malformed: nonces and urls
    assert by_tag["new_account"] == by_tag["new_nonce"] == 4  # one account and nonce per VU
    assert by_tag["new_order"] == by_tag["order"] == by_tag["authz"] > 4
    assert result["sign_ms"]["count"] == sum(by_tag[t] for t in SIGNED_TAGS if t in by_tag)
    assert result["sign_ms"]["p50"] > 0
    engine = sa.create_engine(embedded_env.dsn)
    with engine.connect() as conn:
        accounts = conn.execute(sa.text("SELECT count(*) FROM acme_accounts WHERE :c ="
                                        " ANY (contact)"), {"c": acme_orders.CONTACT}).scalar()
        orders = conn.execute(sa.text(
            "SELECT count(*) FROM acme_orders o JOIN acme_accounts a USING (account_id)"
            " WHERE :c = ANY (a.contact) AND o.status = 'ready'"),
            {"c": acme_orders.CONTACT}).scalar()
    engine.dispose()
    assert accounts == 4 and orders == by_tag["new_order"]
    record = json.loads((run_dir / "record.json").read_text())
    # the SLO verdict is the machine's (a busy one may breach it, failing the notebook as it
    # should); on any machine the exit code says which, and only that
    assert record["passed"] == all(t["ok"] for t in record["thresholds"])
    assert code == (0 if record["passed"] else 99) and record["target"]["kind"] == "stand-in"
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])
def test_finalize_failures_get_a_fresh_nonce_and_count_as_server_internal(
        embedded_env, embedded_target_state, tmp_path, alg):
    spec_ = scenarios.get("acme_orders")
    params = spec_.params_for("smoke", {"duration_s": 1.0, "vus": 2, "finalize": True,
                                        "alg": alg})
    info = embedded.read_info(embedded_target_state)
    spec = DriveSpec(base_url=info.url, templates=spec_.templates(params),
                     **spec_.executor_settings(params), ca_file=info.ca_file,
                     token_env="ACME_TEST_TOKEN", scenario="acme_orders")
    result = driver.drive(spec, tmp_path, env={"ACME_TEST_TOKEN": embedded.read_token(
        embedded_target_state)}, echo=lambda line: None)
    by_tag = {tag: stats["count"] for tag, stats in result["by_tag"].items()}
    finalized = by_tag["finalize"]
    assert finalized >= 2 and result["problems"] == {"finalize": {"serverInternal": finalized}}
    assert result["errors"] == {"http_5xx": finalized}
    # after each 500 the next signed request fetched a nonce: one per VU plus one per failure,
    # but for the VUs whose last finalize ended the run
    assert finalized <= by_tag["new_nonce"] <= finalized + 2
    assert result["csr_ms"]["count"] == finalized
    assert result["script"]["params"]["alg"] == alg
