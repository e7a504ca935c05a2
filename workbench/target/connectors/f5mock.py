"""A stand-in for an F5 BIG-IP's iControl REST: what certctl's F5 connector calls, and /healthz.

Written from what certctl's connector (``internal/connector/target/f5``) sends and expects;
not certctl's own mock, and not a BIG-IP. A deployment, in the connector's order:

1. ``POST /mgmt/shared/authn/login`` with ``username``, ``password``, ``loginProviderName``:
   a session token under ``token.token`` (any non-empty credentials are accepted);
2. ``POST /mgmt/shared/file-transfer/uploads/<file>``, ``Content-Range: 0-<n-1>/<n>`` (F5
   requires it even for one chunk), the PEM bytes: kept under ``/var/config/rest/downloads/``;
3. ``POST /mgmt/tm/sys/crypto/cert`` and ``/key`` with ``command: install``, ``name`` and
   ``from-local-file``: the uploaded file becomes a crypto object (400 if it was not uploaded);
4. ``POST /mgmt/tm/transaction``: ``transId`` as a JSON *number*, as BIG-IP answers (the
   connector decodes it as ``json.Number``, so a string id would fail its decode);
5. ``PATCH /mgmt/tm/ltm/profile/client-ssl/~<partition>~<profile>`` with ``cert``, ``key``,
   ``chain`` (``/<partition>/<name>``) and ``X-F5-REST-Overriding-Collection:
   /mgmt/tm/transaction/<id>``: queued in that transaction (applied at once without it);
6. ``PATCH /mgmt/tm/transaction/<id>`` with ``state: VALIDATING``: every queued change is
   checked (each referenced object installed) and applied together, or none is (400);

then ``GET`` of the profile (its validation) and ``DELETE /mgmt/tm/sys/crypto/cert|key/~P~N``
(its clean-up after a failure). Every call but the login needs a live ``X-F5-Auth-Token`` and
answers 401 without one (the connector logs in again once on a 401). ``GET /healthz`` answers
``ok`` without a token: certctl's k6 harness probes it, the connector itself never calls it.
State is in memory; ``GET /mock/state`` shows it (counts and names, never key material).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import signal
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

DOWNLOADS = "/var/config/rest/downloads/"
_RANGE = re.compile(r"^(\d+)-(\d+)/(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PROFILE = re.compile(r"^~(?P<partition>[A-Za-z0-9_-]+)~(?P<name>[A-Za-z0-9_.-]+)$")


@dataclass
class BigIp:
    """What the mock remembers: sessions, uploads, crypto objects, profiles, transactions."""

    tokens: set[str] = field(default_factory=set)
    uploads: dict[str, bytes] = field(default_factory=dict)  # local file path -> bytes
    certs: dict[str, str] = field(default_factory=dict)  # /Partition/name -> local file
    keys: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, dict] = field(default_factory=dict)  # ~P~N -> cert, key, chain
    transactions: dict[int, list[tuple[str, dict]]] = field(default_factory=dict)
    next_transaction: int = 1_000_000_001  # BIG-IP's ids are large integers
    calls: dict[str, int] = field(default_factory=dict)  # route -> count

    def summary(self) -> dict:
        return {"sessions": len(self.tokens), "uploads": sorted(self.uploads),
                "certs": sorted(self.certs), "keys": sorted(self.keys),
                "profiles": self.profiles, "open_transactions": sorted(self.transactions),
                "calls": dict(sorted(self.calls.items()))}


STATE = web.AppKey("bigip", BigIp)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    """iControl REST's error shape: code, message, errorStack."""
    return web.json_response({"code": status, "message": message, "errorStack": []},
                             status=status)


async def _json(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body is not a JSON object")
    return body


@web.middleware
async def authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the call; every route but the login and /healthz needs a live session token."""
    bigip = request.app[STATE]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource \
        else "unmatched"
    bigip.calls[f"{request.method} {route}"] = bigip.calls.get(f"{request.method} {route}", 0) + 1
    public = request.path in ("/healthz", "/mgmt/shared/authn/login") or \
        request.path.startswith("/mock/")
    if not public and request.headers.get("X-F5-Auth-Token") not in bigip.tokens:
        return _error(401, "Authorization failed: no user authentication header or token "
                           "detected")
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def login(request: web.Request) -> web.Response:
    body = await _json(request)
    user, password = body.get("username"), body.get("password")
    if not (isinstance(user, str) and user and isinstance(password, str) and password):
        return _error(401, "Authentication failed.")
    token = secrets.token_hex(16).upper()
    request.app[STATE].tokens.add(token)
    return web.json_response({"username": user, "loginProviderName":
                              body.get("loginProviderName", "tmos"),
                              "token": {"token": token, "name": token, "userName": user,
                                        "timeout": 1200, "expirationMicros": 0}})


async def upload(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not _NAME.match(name):
        return _error(400, f"invalid file name {name!r}")
    match = _RANGE.match(request.headers.get("Content-Range", ""))
    if not match:
        return _error(400, "Content-Range header is required: <start>-<end>/<total>")
    start, end, total = (int(g) for g in match.groups())
    data = await request.read()
    if end - start + 1 != len(data) or end >= total:
        return _error(400, f"Content-Range {start}-{end}/{total} does not match the "
                           f"{len(data)} bytes sent")
    path = DOWNLOADS + name
    uploads = request.app[STATE].uploads
    uploads[path] = (uploads.get(path, b"") if start else b"") + data
    remaining = total - len(uploads[path])
    return web.json_response({"remainingByteCount": remaining, "usedChunks": {"0": len(data)},
                              "totalByteCount": total, "localFilePath": path,
                              "temporaryFilePath": path + ".tmp", "generation": 0,
                              "lastUpdateMicros": 0})


def _install(kind: str) -> Handler:
    async def install(request: web.Request) -> web.Response:
        body = await _json(request)
        name, local = body.get("name"), body.get("from-local-file")
        if body.get("command") != "install" or not isinstance(name, str) or not _NAME.match(
                name):
            return _error(400, "expected command install and a name")
        bigip = request.app[STATE]
        if local not in bigip.uploads:
            return _error(400, f"File not found: {local}")
        getattr(bigip, kind)[f"/Common/{name}"] = local
        return web.json_response({"kind": f"tm:sys:crypto:{kind[:-1]}:{kind[:-1]}state",
                                  "name": name, "command": "install",
                                  "from-local-file": local})
    return install


def _delete(kind: str) -> Handler:
    async def delete(request: web.Request) -> web.Response:
        match = _PROFILE.match(request.match_info["name"])
        objects = getattr(request.app[STATE], kind)
        path = f"/{match['partition']}/{match['name']}" if match else ""
        if path not in objects:
            return _error(404, f"01020036:3: The requested {kind[:-1]} ({path}) was not found.")
        del objects[path]
        return web.Response()
    return delete


async def new_transaction(request: web.Request) -> web.Response:
    bigip = request.app[STATE]
    trans_id = bigip.next_transaction
    bigip.next_transaction += 1
    bigip.transactions[trans_id] = []
    return web.json_response({"transId": trans_id, "state": "STARTED", "timeoutSeconds": 120,
                              "asyncExecution": False, "validateOnly": False,
                              "executionTimeout": 300, "executionTime": 0,
                              "failureReason": "", "kind": "tm:transactionstate"})


def _check(bigip: BigIp, changes: dict) -> str | None:
    """Why a profile change cannot apply (a referenced object is not installed), or None."""
    for field_name, objects in (("cert", bigip.certs), ("key", bigip.keys),
                                ("chain", bigip.certs)):
        ref = changes.get(field_name)
        if ref and ref not in objects:
            return f"01070712:3: {field_name} {ref} not found"
    return None


async def commit(request: web.Request) -> web.Response:
    bigip = request.app[STATE]
    try:
        trans_id = int(request.match_info["id"])
    except ValueError:
        return _error(404, "transaction not found")
    body = await _json(request)
    if trans_id not in bigip.transactions:
        return _error(404, f"Transaction {trans_id} not found")
    if body.get("state") != "VALIDATING":
        return _error(400, "set state VALIDATING to commit")
    queued = bigip.transactions.pop(trans_id)
    for _, changes in queued:  # all or nothing, as BIG-IP rolls a failed transaction back
        problem = _check(bigip, changes)
        if problem:
            return _error(400, f"transaction failed: {problem}")
    for profile, changes in queued:
        bigip.profiles.setdefault(profile, {"cert": "", "key": "", "chain": ""}).update(changes)
    return web.json_response({"transId": trans_id, "state": "COMPLETED",
                              "kind": "tm:transactionstate"})


def _profile_body(path: str, profile: dict) -> dict:
    match = _PROFILE.match(path)
    return {"kind": "tm:ltm:profile:client-ssl:client-sslstate", "name": match["name"],
            "partition": match["partition"],
            "fullPath": f"/{match['partition']}/{match['name']}", **profile}


async def profile(request: web.Request) -> web.Response:
    path = request.match_info["name"]
    if not _PROFILE.match(path):
        return _error(400, f"profile path {path!r} must be ~<partition>~<name>")
    bigip = request.app[STATE]
    if request.method == "GET":
        if path not in bigip.profiles:
            return _error(404, f"01020036:3: The requested client-ssl profile ({path}) was "
                               "not found.")
        return web.json_response(_profile_body(path, bigip.profiles[path]))
    body = await _json(request)
    changes = {k: v for k, v in body.items() if k in ("cert", "key", "chain")}
    collection = request.headers.get("X-F5-REST-Overriding-Collection", "")
    if collection:
        match = re.fullmatch(r"/mgmt/tm/transaction/(\d+)", collection)
        if not match or int(match[1]) not in bigip.transactions:
            return _error(404, f"transaction of {collection!r} not found")
        bigip.transactions[int(match[1])].append((path, changes))
        return web.json_response(_profile_body(path, bigip.profiles.get(path, {}) | changes))
    problem = _check(bigip, changes)
    if problem:
        return _error(400, problem)
    bigip.profiles.setdefault(path, {"cert": "", "key": "", "chain": ""}).update(changes)
    return web.json_response(_profile_body(path, bigip.profiles[path]))


async def mock_state(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(request.app[STATE].summary()),
                        content_type="application/json")


def build_app(profiles: tuple[str, ...] = ("~Common~clientssl",)) -> web.Application:
    """The mock's routes over a fresh state; ``profiles`` exist from the start (BIG-IP ships
    ``clientssl``); a PATCH of another creates it."""
    app = web.Application(middlewares=[authenticated])
    app[STATE] = BigIp(profiles={p: {"cert": "/Common/default.crt",
                                     "key": "/Common/default.key", "chain": ""}
                                 for p in profiles})
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/mgmt/shared/authn/login", login)
    app.router.add_post("/mgmt/shared/file-transfer/uploads/{name}", upload)
    app.router.add_post("/mgmt/tm/sys/crypto/cert", _install("certs"))
    app.router.add_post("/mgmt/tm/sys/crypto/key", _install("keys"))
    app.router.add_delete("/mgmt/tm/sys/crypto/cert/{name}", _delete("certs"))
    app.router.add_delete("/mgmt/tm/sys/crypto/key/{name}", _delete("keys"))
    app.router.add_post("/mgmt/tm/transaction", new_transaction)
    app.router.add_patch("/mgmt/tm/transaction/{id}", commit)
    app.router.add_route("GET", "/mgmt/tm/ltm/profile/client-ssl/{name}", profile)
    app.router.add_route("PATCH", "/mgmt/tm/ltm/profile/client-ssl/{name}", profile)
    app.router.add_get("/mock/state", mock_state)
    return app


async def serve(app: web.Application, host: str, port: int, context: ssl.SSLContext) -> None:
    """Serve until SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.target.connectors.f5mock",
        description="A mock of the iControl REST calls certctl's F5 connector makes (a test "
                    "target, not a BIG-IP).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    args = parser.parse_args(argv)
    asyncio.run(serve(build_app(), args.host, args.port, tls_context(args.cert, args.key)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
