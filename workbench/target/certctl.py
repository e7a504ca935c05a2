"""certctl builds, and certctl servers run by the workbench on the embedded PostgreSQL.

Nothing of certctl is in this repository: a build is made from the checkout the user names and
kept under the state directory (``<state>/builds/``), never committed. The public API, used by
``workbench target up --certctl`` and meant for anything that runs several builds (A/B, history):

``build(src, rev=None, state=None, echo=None) -> Build``
    ``go build ./cmd/server`` of the git checkout ``src`` at commit ``rev`` (None: its working
    tree as it is, local changes included; a revision is checked out in a temporary git clone
    sharing its objects), with ``handler.Version`` stamped from ``git describe --tags --always
    --dirty`` and the commit and ``modified`` from Go's VCS stamping (``-buildvcs=true``). Cached in
    ``<state>/builds/<key>/`` (``certctl-server``, the same revision's ``migrations/``,
    ``build.json``); the key is the commit, plus ``-dirty-<hash of the local changes>`` for a
    working tree with changes, so a second build of a key is never made.
``from_binary(path) -> Build``
    a server built elsewhere (``--certctl-bin``), its migrations found beside it.
``start(build, name="target", host, port, keygen_mode, env, state, fresh_database) -> TargetInfo``
    run a build as instance ``name``: its own database (``certctl_<name>_<build>``) on the
    embedded PostgreSQL, its own port, working directory without ``web/``, log, pid and fresh
    random API key (``<state>/instances/<name>/``), the benchmark profile (:func:`profile_env`,
    then ``env`` over it), ``/ready`` awaited (else an error with the log's tail), then the ARI
    issuer fix and the restart it needs (:func:`disable_other_issuers`). Idempotent for the
    same build and settings; another build or other settings replace the instance.
``stop(name, state=None)``; ``workbench.target.embedded.instances(state)``: every instance's
    TargetInfo (``workbench.target.embedded.status(state)`` describes them).
``up(build, ...) -> TargetInfo``
    :func:`start` as instance ``target`` and make it the current target (the stand-in, if it
    ran, is stopped): ``workbench run``, ``seed``, ``drive --send-token`` and the notebooks then
    load it with no ``--target`` and no exports.

Several instances run at once (each name its own port and database);
``workbench.target.embedded.down`` stops them all and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg

from workbench import jsonio
from workbench.errors import WorkbenchError
from workbench.paths import state_dir
from workbench.target import embedded, tlsca

BINARY = "certctl-server"
BUILD_FILE = "build.json"
BUILDS_DIR = "builds"
LOG_FILE = "certctl.log"
KEYGEN_MODES = ("agent", "server")
READY_TIMEOUT_S = 120.0  # migrations and the demo seed run at every boot
STOP_TIMEOUT_S = 35.0  # certctl waits up to 30 s for its scheduler on SIGTERM
VERSION_VAR = "internal/api/handler.Version"  # under the module path read from go.mod
ARI_ISSUER = "iss-local"  # the issuer the fixtures' certificates name
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Build:
    """A certctl server binary and the migrations of the same revision."""

    key: str  # cache key: the commit, + "-dirty-<hash>" for local changes; "bin-<hash>"
    binary: Path
    migrations: Path
    version: str  # what the binary reports: git describe, stamped into handler.Version
    commit: str | None
    modified: bool
    module: str | None
    source: str  # the checkout (or the binary) it came from
    rev: str | None = None  # the revision asked for (None: the working tree)
    built_at: str | None = None
    go: str | None = None
    seconds: float | None = None  # how long `go build` took when it was made
    cached: bool = False  # this call found it in the cache (not stored)

    @property
    def slug(self) -> str:
        """A short name for databases: the commit's first 12 hex (+ the changes' hash)."""
        head, *rest = self.key.split("-")
        return f"{head[:8]}_{rest[-1][:8]}" if rest else head[:12]

    def facts(self) -> dict:
        """What a target record keeps of it (JSON types, no secrets)."""
        out = asdict(self) | {"binary": str(self.binary), "migrations": str(self.migrations)}
        out.pop("cached")
        return out


# --- building ----------------------------------------------------------------------------------


def build(src: str | Path, rev: str | None = None, state: Path | None = None,
          echo: Echo | None = None) -> Build:
    """Build ``./cmd/server`` of the certctl checkout ``src`` (see the module's docstring);
    returns the cached build when this key was built before."""
    src = Path(src).expanduser().resolve()
    _check_checkout(src)
    module = module_path(src / "go.mod")
    if rev is None:
        commit = git(src, "rev-parse", "HEAD")
        changes = local_changes(src)  # a build of the working tree includes them
        key = f"{commit}-dirty-{hashlib.sha256(changes).hexdigest()[:12]}" if changes else commit
    else:
        try:
            commit = git(src, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        except WorkbenchError:
            raise WorkbenchError(f"no commit {rev!r} in {src}; name a commit, tag or branch "
                                 "of that checkout (git fetch it first)") from None
        changes, key = b"", commit
    cache = builds_dir(state)
    found = read_build(cache / key)
    if found is not None:
        return replace(found, cached=True)

    cache.mkdir(parents=True, exist_ok=True)
    work = cache / f".building-{secrets.token_hex(4)}"  # renamed into place when whole
    work.mkdir()
    try:
        with _source_tree(src, None if rev is None else commit, cache) as tree:
            version = git(tree, "describe", "--tags", "--always", "--dirty")
            say = echo or (lambda line: None)
            say(f"building certctl {version} ({commit[:12]}) from {src} ...")
            started = time.monotonic()
            _go_build(tree, module, version, work / BINARY)
            seconds = round(time.monotonic() - started, 1)
            say(f"built in {seconds:.1f} s")
            if not (tree / "migrations").is_dir():
                raise WorkbenchError(f"{src} at {commit[:12]} has no migrations/ folder; is it "
                                     "a certctl checkout?")
            shutil.copytree(tree / "migrations", work / "migrations")
        made = Build(key=key, binary=cache / key / BINARY, migrations=cache / key / "migrations",
                     version=version, commit=commit, modified=bool(changes),
                     module=module, source=str(src), rev=rev,
                     built_at=datetime.now(UTC).isoformat(timespec="seconds"), go=_go_version(),
                     seconds=seconds)
        jsonio.write_json(work / BUILD_FILE, made.facts())
        try:
            work.rename(cache / key)
        except OSError:  # built at the same time by another call: keep the one in place
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return read_build(cache / key) or made


def from_binary(path: str | Path) -> Build:
    """A certctl server built elsewhere. Its migrations must be those of its own revision:
    ``migrations/`` beside the binary or one folder up (a checkout's ``bin/``)."""
    binary = Path(path).expanduser().resolve()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise WorkbenchError(f"--certctl-bin {path}: not an executable file")
    migrations = next((d / "migrations" for d in (binary.parent, binary.parent.parent)
                       if (d / "migrations").is_dir()), None)
    if migrations is None:
        raise WorkbenchError(f"no migrations/ beside {binary} or one folder up: certctl needs "
                             "the migrations of the revision it was built from; copy them there")
    settings = _binary_settings(binary)
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    version = re.search(re.escape(VERSION_VAR) + r"=(\S+)", settings.get("-ldflags", ""))
    return Build(key=f"bin-{digest[:16]}", binary=binary, migrations=migrations,
                 version=version.group(1).strip("'\"") if version else "unknown",
                 commit=settings.get("vcs.revision"),
                 modified=settings.get("vcs.modified") == "true", module=settings.get("mod"),
                 source=str(binary), go=settings.get("go"), cached=True)


def builds_dir(state: Path | None = None) -> Path:
    return (Path(state) if state is not None else state_dir()) / BUILDS_DIR


def read_build(folder: Path) -> Build | None:
    """The build cached in ``folder``, or None when there is none (or it is incomplete)."""
    try:
        facts = json.loads((folder / BUILD_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    made = Build(**facts | {"binary": Path(facts["binary"]),
                            "migrations": Path(facts["migrations"])})
    return made if made.binary.is_file() and made.migrations.is_dir() else None


def module_path(go_mod: Path) -> str:
    """The module path declared in ``go.mod`` (``github.com/certctl-io/certctl`` for certctl)."""
    match = re.search(r"^module\s+(\S+)", go_mod.read_text(), re.MULTILINE)
    if not match:
        raise WorkbenchError(f"{go_mod} declares no module")
    return match.group(1).strip('"')


def local_changes(src: Path) -> bytes:
    """The working tree's changes against HEAD (tracked and untracked, not ignored) as bytes,
    empty when clean: what a dirty build's cache key hashes."""
    if not git(src, "status", "--porcelain", "--untracked-files=all"):
        return b""
    done = subprocess.run(["git", "-C", str(src), "diff", "HEAD", "--binary"],
                          capture_output=True)
    if done.returncode != 0:  # bytes, not text: git() cannot read it
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise WorkbenchError(f"--certctl {src}: git cannot diff its working tree against HEAD "
                             f"({said[-1] if said else f'exit {done.returncode}'}), so a build "
                             "of it cannot be named; repair the clone (git fsck) or clone it "
                             "again, or build a commit of it with certctl:REV")
    diff = done.stdout
    untracked = git(src, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    parts = [diff] + [name.encode() + b"\0" + (src / name).read_bytes()
                      for name in sorted(untracked) if name and (src / name).is_file()]
    return b"\0".join(parts)


def _check_checkout(src: Path) -> None:
    if shutil.which("go") is None:
        raise WorkbenchError("go is not on PATH: building certctl needs Go (go.dev/dl); or "
                             "pass --certctl-bin with a server built elsewhere")
    if not (src / "go.mod").is_file() or not (src / "cmd" / "server").is_dir():
        raise WorkbenchError(f"--certctl {src}: not a certctl checkout (no go.mod and "
                             "cmd/server/ there); name the folder of a clone of certctl")
    try:
        git(src, "rev-parse", "--verify", "HEAD")
    except WorkbenchError:
        raise WorkbenchError(f"--certctl {src}: not a git checkout with a commit; the build "
                             "is named by its commit (clone certctl with git)") from None


@contextlib.contextmanager
def _source_tree(src: Path, commit: str | None, cache: Path) -> Iterator[Path]:
    """``src`` itself (commit None), else a temporary clone of it at ``commit``, removed
    afterwards. A clone, not a ``git worktree``: Go stamps the commit only where ``.git`` is a
    directory. It shares ``src``'s objects and takes its sparse-checkout patterns (a checkout
    missing some blobs still checks out)."""
    if commit is None:
        yield src
        return
    tree = cache / f".source-{secrets.token_hex(4)}"
    try:
        git(cache, "clone", "--quiet", "--shared", "--no-checkout", str(src), str(tree))
        if _git_config(src, "core.sparseCheckout") == "true":
            for name in ("core.sparseCheckout", "core.sparseCheckoutCone"):
                if value := _git_config(src, name):
                    git(tree, "config", name, value)
            patterns = Path(git(src, "rev-parse", "--path-format=absolute", "--git-path",
                                 "info/sparse-checkout"))
            shutil.copyfile(patterns, tree / ".git" / "info" / "sparse-checkout")
        git(tree, "checkout", "--quiet", "--detach", commit)
        yield tree
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def _git_config(repo: Path, name: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "config", "--get", name],
                          capture_output=True, text=True)
    return done.stdout.strip()


def _go_build(tree: Path, module: str, version: str, out: Path) -> None:
    # -buildvcs=true on the command line wins over a GOFLAGS=-buildvcs=false: the commit and
    # the modified flag come from Go's VCS stamping.
    command = ["go", "build", "-buildvcs=true", "-ldflags", f"-X {module}/{VERSION_VAR}={version}",
               "-o", str(out), "./cmd/server"]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        raise WorkbenchError(f"go build of {tree} failed (exit {done.returncode}): "
                             + " | ".join(done.stderr.strip().splitlines()[-15:]))


def _go_version() -> str | None:
    done = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True)
    return done.stdout.strip() or None


def _binary_settings(binary: Path) -> dict[str, str]:
    """``go version -m``'s facts of a Go binary: go, mod, -ldflags, vcs.revision, ..."""
    if shutil.which("go") is None:
        return {}
    done = subprocess.run(["go", "version", "-m", str(binary)], capture_output=True, text=True)
    out: dict[str, str] = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("\t")
        if line.startswith(f"{binary}:"):
            out["go"] = line.rsplit(" ", 1)[-1]
        elif parts[0] == "mod" and len(parts) > 1:
            out["mod"] = parts[1]
        elif parts[0] == "build" and len(parts) > 1 and "=" in parts[1]:
            name, value = parts[1].split("=", 1)
            out[name] = value
    return out


def git(cwd: Path, *args: str) -> str:
    """``git -C cwd ARGS``: its stdout, or a WorkbenchError naming the command and git's words."""
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise WorkbenchError(f"git {' '.join(args)} in {cwd} failed: "
                             f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


# --- running -----------------------------------------------------------------------------------


def profile_env(*, host: str, port: int, cert_file: Path, key_file: Path, database_url: str,
                migrations: Path, token: str, config_key: str, keygen_mode: str,
                ocsp_dir: Path) -> dict[str, str]:
    """certctl's benchmark profile (docs/certctl-by-hand.md explains each): its background
    work and limits kept out of the measurement, everything by absolute path."""
    return {
        "CERTCTL_SERVER_HOST": host, "CERTCTL_SERVER_PORT": str(port),
        "CERTCTL_SERVER_TLS_CERT_PATH": str(cert_file),
        "CERTCTL_SERVER_TLS_KEY_PATH": str(key_file),
        "CERTCTL_DATABASE_URL": database_url,
        "CERTCTL_DATABASE_MIGRATIONS_PATH": str(migrations),
        "CERTCTL_AUTH_TYPE": "api-key", "CERTCTL_AUTH_SECRET": token,
        "CERTCTL_DEMO_SEED": "true", "CERTCTL_CONFIG_ENCRYPTION_KEY": config_key,
        "CERTCTL_KEYGEN_MODE": keygen_mode, "CERTCTL_LOG_LEVEL": "warn",
        "CERTCTL_RATE_LIMIT_ENABLED": "false",
        "CERTCTL_SCHEDULER_RENEWAL_CHECK_INTERVAL": "720h",
        "CERTCTL_SCHEDULER_AGENT_HEALTH_CHECK_INTERVAL": "24h",
        "CERTCTL_ACME_SERVER_ENABLED": "true",
        "CERTCTL_ACME_SERVER_RATE_LIMIT_ORDERS_PER_HOUR": "0",
        "CERTCTL_ACME_SERVER_RATE_LIMIT_CONCURRENT_ORDERS": "0",
        "CERTCTL_OCSP_RESPONDER_KEY_DIR": str(ocsp_dir),
    }


def database_name(name: str, made: Build) -> str:
    """Each instance and build its own database: two builds never share state."""
    return f"certctl_{name}_{made.slug}"


def start(made: Build, name: str = "target", host: str = "127.0.0.1", port: int = 8443,
          keygen_mode: str = "agent", env: Mapping[str, str] | None = None,
          state: Path | None = None, fresh_database: bool = False,
          ready_timeout_s: float = READY_TIMEOUT_S, echo: Echo | None = None
          ) -> embedded.TargetInfo:
    """Run ``made`` as instance ``name`` (see the module's docstring); returns where it answers.

    ``env`` is set over the benchmark profile (e.g. ``CERTCTL_RATE_LIMIT_ENABLED=true`` to
    measure the limiter); no other ``CERTCTL_*`` variable of the caller reaches certctl.
    ``fresh_database`` drops the instance's database first.
    """
    state = Path(state) if state is not None else state_dir()
    folder = embedded.instance_dir(state, name)
    if keygen_mode not in KEYGEN_MODES:
        raise WorkbenchError(f"--keygen-mode {keygen_mode!r}: choose {' or '.join(KEYGEN_MODES)}")
    overrides = dict(env or {})
    bad = [key for key in overrides if not _ENV_NAME.fullmatch(key)]
    if bad:
        raise WorkbenchError(f"--certctl-env {bad[0]!r}: a variable name is upper-case "
                             "letters, digits and _ (NAME=VALUE)")
    settings = hashlib.sha256(json.dumps(
        [made.key, host, port, keygen_mode, sorted(overrides.items())]).encode()).hexdigest()
    existing = next((i for i in embedded.instances(state) if i.name == name), None)
    if existing is not None:
        if (existing.settings == settings and embedded.server_alive(existing)
                and embedded.ready(existing.url, existing.ca_file, 2.0)):
            return existing
        embedded.retire(state, existing)  # another build or other settings: replaced

    embedded.check_port_free(host, port)  # before starting anything
    say = echo or (lambda line: None)
    socket_dir = embedded.start_postgres(state / "pg")
    database = database_name(name, made)
    embedded.create_database(socket_dir, database, fresh=fresh_database)
    ca_file, cert_file, key_file = embedded.ensure_tls(state / "tls")
    (folder / "ocsp").mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    token_file = folder / "token"
    tlsca.write_private(token_file, (token + "\n").encode())
    url = f"https://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    database_url = (f"postgres://postgres@/{database}?host={quote(str(socket_dir), safe='/')}"
                    "&sslmode=disable")  # lib/pq defaults to TLS, which pgserver does not offer
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_")}
    server_env |= profile_env(host=host, port=port, cert_file=cert_file, key_file=key_file,
                              database_url=database_url, migrations=made.migrations,
                              token=token, config_key=_config_key(state),
                              keygen_mode=keygen_mode, ocsp_dir=folder / "ocsp") | overrides
    log_file = folder / LOG_FILE

    def boot(why: str):
        with open(log_file, "a") as log:
            log.write(f"--- workbench: {why}: {made.binary} ({made.version}, build {made.key}) "
                      f"at {datetime.now(UTC).isoformat(timespec='seconds')}\n")
        process = embedded.launch([str(made.binary)], server_env, cwd=folder, log_file=log_file)
        embedded.wait_ready(process, url, str(ca_file), log_file,
                          f"certctl {made.version} (instance {name})", ready_timeout_s)
        return process

    process = boot("start")
    disabled = disable_other_issuers(embedded.postgres_url(socket_dir, database))
    if disabled:  # certctl builds its issuer registry at boot: the fix needs a restart
        say(f"disabled issuers {', '.join(disabled)} (ARI looks a certificate up under one "
            f"enabled issuer picked at random; fixtures are on {ARI_ISSUER}); restarting")
        embedded.stop_server(_info(process.pid, made))
        process = boot("restart after disabling every issuer but " + ARI_ISSUER)
    info = _info(process.pid, made, kind=embedded.CERTCTL, name=name, url=url, host=host,
                 port=port, ca_file=str(ca_file),
                 dsn=embedded.postgres_url(socket_dir, database, driver="+psycopg"),
                 pg_pgdata=str(state / "pg"), database=database, log_file=str(log_file),
                 token_file=str(token_file), build=made.facts(),
                 identity=_identity(url, str(ca_file)), settings=settings)
    embedded.register(state, info)
    return info


def stop(name: str, state: Path | None = None) -> None:
    """Stop instance ``name`` (its database, log and folder stay)."""
    for info in embedded.instances(state):
        if info.name == name:
            embedded.retire(state, info)


def up(made: Build, state: Path | None = None, host: str = "127.0.0.1", port: int = 8443,
       keygen_mode: str = "agent", env: Mapping[str, str] | None = None,
       ready_timeout_s: float = READY_TIMEOUT_S, echo: Echo | None = None
       ) -> embedded.TargetInfo:
    """:func:`start` as instance ``target`` and make it the current target, replacing the
    stand-in (stopped) or another certctl build."""
    current = embedded.read_info(state)
    if current is not None and current.kind == embedded.STANDIN:
        embedded.retire(state, current)
    info = start(made, "target", host=host, port=port, keygen_mode=keygen_mode, env=env,
                 state=state, ready_timeout_s=ready_timeout_s, echo=echo)
    embedded.set_current(state, info)
    return info


def disable_other_issuers(dsn: str) -> list[str]:
    """certctl's ARI looks a serial up under one enabled issuer picked at random per request,
    so with the demo seed's seven the fixtures (on ``iss-local``) answer 200 one time in seven:
    disable every other issuer. Returns those disabled (none when there is no ``issuers``
    table, no enabled ``iss-local``, or it is already alone); certctl must then restart."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('issuers')").fetchone()[0] is None:
            return []
        if not conn.execute("SELECT 1 FROM issuers WHERE id = %s AND enabled",
                            (ARI_ISSUER,)).fetchone():
            return []
        rows = conn.execute("UPDATE issuers SET enabled = false WHERE enabled AND id <> %s "
                            "RETURNING id", (ARI_ISSUER,)).fetchall()
    return sorted(row[0] for row in rows)


def _info(pid: int, made: Build, **fields) -> embedded.TargetInfo:
    """A TargetInfo for a certctl process (with placeholders when only stopping it)."""
    base = {"url": "", "host": "", "port": 0, "ca_file": "", "dsn": "", "pg_pgdata": ""}
    return embedded.TargetInfo(**(base | fields), pid=pid, executable=str(made.binary),
                             stop_timeout_s=STOP_TIMEOUT_S)


def _identity(url: str, ca_file: str) -> dict:
    """What the server says it is (``/api/v1/version``): the build as it reports itself."""
    try:
        response = httpx.get(f"{url}/api/v1/version",
                             verify=ssl.create_default_context(cafile=ca_file), timeout=5.0)
        return response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}


def _config_key(state: Path) -> str:
    """certctl's config encryption key (the demo seed needs one): one per state directory,
    kept, because the databases' encrypted issuer settings are read with it at every boot."""
    path = state / "certctl-config-key"
    if not path.exists():
        tlsca.write_private(path, (secrets.token_urlsafe(48) + "\n").encode())
    return path.read_text().strip()
