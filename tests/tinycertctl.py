'''A tiny certctl look-alike in Go for the launch path's tests: no certctl source is needed.

:func:`make_repo` writes it into a new git repository laid out as certctl is (``go.mod``,
``cmd/server/main.go``, ``internal/api/handler`` with the ``Version`` variable the workbench
stamps, ``migrations/``). The server reads certctl's environment (host, port, TLS pair, API key,
migrations path), answers ``/ready``, ``/health``, ``/api/v1/version`` (version from -X, commit
and modified from Go's VCS stamping), ``/api/v1/auth/check`` and the ACME reads acme_flow
sends, and shows what it was started with at ``/tiny/env`` (never the key). Knobs, through
``--certctl-env``: ``TINY_NEVER_READY`` (``/ready`` answers 503), ``TINY_EXIT_AT_START`` (exit 3
at once), ``TINY_EXIT_AFTER=N`` (exit 3 after N ``/acme/`` requests). A revision can be slower on
purpose: ``commit(repo, revision, sleep_ms=N)`` sleeps N ms in the ACME directory handler (what
acme_flow's ``directory`` endpoint times), for A/B, history and bisect tests.
'''

from __future__ import annotations

import subprocess
from pathlib import Path

MODULE = "example.test/tinycertctl"

GO_MOD = f"module {MODULE}\n\ngo 1.22\n"

VERSION_GO = """package handler

// Version is stamped at build time with -ldflags -X, as certctl's is.
var Version = ""
"""

MAIN_GO = """package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"MODULE/internal/api/handler"
)

const revisionNote = "REVISION"

// directorySleep makes a revision slower on purpose: the tests' known regression.
const directorySleep = SLEEP_MS * time.Millisecond

func send(w http.ResponseWriter, status int, kind string, body any) {
	w.Header().Set("Content-Type", kind)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func main() {
	if os.Getenv("TINY_EXIT_AT_START") != "" {
		fmt.Fprintln(os.Stderr, "tiny: exiting at start on purpose")
		os.Exit(3)
	}
	commit, modified := "", false
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	migrations := os.Getenv("CERTCTL_DATABASE_MIGRATIONS_PATH")
	migration, _ := os.ReadFile(filepath.Join(migrations, "000001_schema.up.sql"))
	secret := os.Getenv("CERTCTL_AUTH_SECRET")
	exitAfter, _ := strconv.Atoi(os.Getenv("TINY_EXIT_AFTER"))
	var acme atomic.Int64
	cwd, _ := os.Getwd()
	_, webErr := os.Stat(filepath.Join(cwd, "web"))
	env := map[string]any{"migration": string(migration), "revision": revisionNote, "cwd": cwd,
		"web_dir": webErr == nil}
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		secret := name == "CERTCTL_AUTH_SECRET" || name == "CERTCTL_CONFIG_ENCRYPTION_KEY"
		if strings.HasPrefix(name, "CERTCTL_") && !secret {
			env[name] = value
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		if os.Getenv("TINY_NEVER_READY") != "" {
			send(w, 503, "application/json", map[string]string{"status": "db_unavailable"})
			return
		}
		send(w, 200, "application/json", map[string]string{"status": "ready", "db": "reachable"})
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		send(w, 200, "application/json", map[string]string{"status": "healthy"})
	})
	mux.HandleFunc("/api/v1/version", func(w http.ResponseWriter, r *http.Request) {
		send(w, 200, "application/json", map[string]any{"version": handler.Version,
			"commit": commit, "modified": modified, "build_time": "",
			"go_version": runtime.Version()})
	})
	authorized := func(r *http.Request) bool {
		return r.Header.Get("Authorization") == "Bearer "+secret
	}
	mux.HandleFunc("/api/v1/auth/check", func(w http.ResponseWriter, r *http.Request) {
		if !authorized(r) {
			send(w, 401, "text/plain; charset=utf-8", map[string]string{"error": "unauthorized"})
			return
		}
		send(w, 200, "application/json",
			map[string]any{"status": "authenticated", "user": "tiny", "admin": false})
	})
	mux.HandleFunc("/tiny/env", func(w http.ResponseWriter, r *http.Request) {
		send(w, 200, "application/json", env)
	})
	mux.HandleFunc("/acme/", func(w http.ResponseWriter, r *http.Request) {
		if exitAfter > 0 && acme.Add(1) > int64(exitAfter) {
			fmt.Fprintf(os.Stderr, "tiny: exiting after %d ACME requests on purpose\\n", exitAfter)
			os.Exit(3)
		}
		if !authorized(r) {
			send(w, 401, "text/plain; charset=utf-8", map[string]string{"error": "unauthorized"})
			return
		}
		switch {
		case strings.HasSuffix(r.URL.Path, "/directory"):
			time.Sleep(directorySleep)
			send(w, 200, "application/json",
				map[string]string{"newNonce": "https://" + r.Host + "/acme/new-nonce"})
		case strings.HasSuffix(r.URL.Path, "/new-nonce"):
			w.Header().Set("Replay-Nonce", strconv.FormatInt(acme.Load(), 10))
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(200)
		default:
			send(w, 404, "application/problem+json",
				map[string]string{"type": "urn:ietf:params:acme:error:malformed"})
		}
	})
	addr := os.Getenv("CERTCTL_SERVER_HOST") + ":" + os.Getenv("CERTCTL_SERVER_PORT")
	fmt.Fprintln(os.Stderr, "tiny: listening on", addr, "revision", revisionNote)
	err := http.ListenAndServeTLS(addr, os.Getenv("CERTCTL_SERVER_TLS_CERT_PATH"),
		os.Getenv("CERTCTL_SERVER_TLS_KEY_PATH"), mux)
	fmt.Fprintln(os.Stderr, "tiny:", err)
	os.Exit(1)
}
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def write_revision(repo: Path, revision: str, sleep_ms: int = 0) -> None:
    """The server's source at ``revision`` (its note and its migration's text differ), its
    ACME directory handler sleeping ``sleep_ms`` ms."""
    (repo / "cmd" / "server").mkdir(parents=True, exist_ok=True)
    (repo / "internal" / "api" / "handler").mkdir(parents=True, exist_ok=True)
    (repo / "migrations").mkdir(exist_ok=True)
    (repo / "go.mod").write_text(GO_MOD)
    (repo / "internal" / "api" / "handler" / "version.go").write_text(VERSION_GO)
    (repo / "cmd" / "server" / "main.go").write_text(
        MAIN_GO.replace("MODULE", MODULE).replace("REVISION", revision)
        .replace("SLEEP_MS", str(int(sleep_ms))))
    (repo / "migrations" / "000001_schema.up.sql").write_text(f"-- schema of {revision}\n")


def commit(repo: Path, revision: str, tag: str | None = None, sleep_ms: int = 0) -> str:
    """Write ``revision`` (its directory handler sleeping ``sleep_ms``), commit it (and tag
    it); returns the commit."""
    write_revision(repo, revision, sleep_ms)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.test", "commit", "-q", "-m",
        revision)
    if tag:
        git(repo, "tag", tag)
    return git(repo, "rev-parse", "HEAD")


def make_repo(path: Path) -> Path:
    """A new git repository for the tiny server, no commit yet."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    return path
