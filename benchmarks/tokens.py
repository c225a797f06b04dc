"""Token auth: issuance (password and refresh-token grants) and the registry's token check.

trustyard runs a second time in token mode (`auth.mode = token`, its own data directory in the
bench work dir), with one user created through `trustyard admin user add` at a low bcrypt cost
(`BENCH_BCRYPT_COST`, default 4; password grants are bounded by it). Every figure comes from
`hey`, the same client for every row:

- grants/s: `POST /auth/token` (form) with `grant_type=password` and `grant_type=refresh_token`,
  1 and 16 clients. Distribution has no token issuer: these rows are trustyard only.
- manifest HEAD by tag with `Authorization: Bearer …` against trustyard in token mode, beside
  HEAD without a token against a fresh trustyard in auth mode none (same flags, same run; the
  two measured back to back, order alternating per repetition): the token check's overhead,
  also taken per adjacent pair (`overhead_pct` in the JSON). The reference registry is measured
  the same way, plain and with `auth.token` pointed at our issuer (`rootcertbundle` = the
  issuer's generated `cert.pem`), so both rows also have a reference column.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from benchmarks.api import ACCEPT, push_image, small_image
from benchmarks.context import FULL, Context
from benchmarks.http1 import Connection, Response, expect
from benchmarks.manifests import run_hey
from benchmarks.servers import (
    REFERENCE,
    REFERENCE_CONFIG,
    TRUSTYARD,
    ReferenceServer,
    Server,
    TrustyardServer,
    process_tree,
)

FAMILY = (
    "Token auth (grants/s and requests/s, higher is better; p50/p99 in ms; "
    "grants: trustyard only, Distribution issues no tokens)"
)
SERVICE = "trustyard-bench"
USER = "bench"
PASSWORD = "bench-password-0123456789"
REPO = f"{USER}/manifest"  # every user owns ${user}/* (built-in rule)
TAG = "latest"
GRANT_CLIENTS = (1, 16)
HEAD_CLIENTS = (1, 32)
HEAD_REPEATS = 5  # full mode: the side-by-side rows are noisy on a shared machine
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BCRYPT_COST = int(os.environ.get("BENCH_BCRYPT_COST", "4"))


def hey(url: str, clients: int, seconds: int, *args: str, method: str = "GET") -> dict[str, float]:
    """One `hey` run (manifests.run_hey); a run without a single 2xx answer is an error here."""
    return run_hey(url, method, clients, seconds, *args, require_ok=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree (its live processes), in seconds."""
    ticks = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLOCK_TICKS


def measured(server: Server, url: str, clients: int, seconds: int, *args: str) -> dict[str, float]:
    """HEAD load with hey, plus the server's CPU time per answered request (µs): on a shared
    machine this is steadier than req/s, which moves with whatever else runs."""
    before = cpu_seconds(server.pid)
    r = hey(url, clients, seconds, *args, method="HEAD")
    used = cpu_seconds(server.pid) - before
    r["cpu_us_per_request"] = 1e6 * used / max(1, r["requests"])
    return r


class AuthorizedConnection(Connection):
    """A Connection that sends one Authorization header with every request."""

    def __init__(self, host: str, port: int, authorization: str) -> None:
        super().__init__(host, port)
        self.authorization = authorization

    def request(  # type: ignore[override]
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        *args: object,
        **kw: object,
    ) -> Response:
        merged = {**(headers or {}), "Authorization": self.authorization}
        return super().request(method, path, merged, *args, **kw)  # type: ignore[arg-type]


def _token_env() -> dict[str, str]:
    return {
        "TRUSTYARD_AUTH__MODE": "token",
        "TRUSTYARD_AUTH__BCRYPT_COST": str(BCRYPT_COST),
        "TRUSTYARD_AUTH__TOKEN__SERVICE": SERVICE,
        "TRUSTYARD_AUTH__TOKEN__ISSUER": SERVICE,
        "TRUSTYARD_AUTH__TOKEN__EXPIRATION_SECONDS": "3600",
    }


@dataclass
class TokenTrustyard(TrustyardServer):
    """trustyard in token mode: the same command as the benchmark's, plus the auth settings."""

    extra_env: dict[str, str] = field(default_factory=_token_env)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}

    READY_STATUS = 401

    def admin(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "trustyard", "admin", "--data-dir", str(self.data_dir), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"trustyard admin {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def post_token(self, **form: str) -> dict[str, object]:
        with self.connect() as c:
            r = c.request(
                "POST",
                "/auth/token",
                {"Content-Type": "application/x-www-form-urlencoded"},
                body=urlencode({"service": SERVICE, **form}).encode(),
            )
        expect(r, 200)
        return dict(json.loads(r.body))


@dataclass
class TokenReference(ReferenceServer):
    """The reference registry verifying our issuer's tokens (Distribution's auth.token)."""

    issuer_url: str = ""
    cert: Path = Path()
    READY_STATUS = 401

    def command(self) -> list[str]:
        cmd = super().command()
        config = self.workdir / "config.yml"
        config.write_text(
            REFERENCE_CONFIG.format(root=self.data_dir, port=self.port)
            + "auth:\n  token:\n"
            + f"    realm: {self.issuer_url}/auth/token\n"
            + f"    service: {SERVICE}\n    issuer: {SERVICE}\n"
            + f"    rootcertbundle: {self.cert}\n"
        )
        return cmd


def _grant_rows(ctx: Context, issuer: TokenTrustyard) -> None:
    mode = ctx.mode
    scope = f"repository:{REPO}:pull"
    password_form = urlencode(
        {
            "grant_type": "password",
            "service": SERVICE,
            "username": USER,
            "password": PASSWORD,
            "scope": scope,
        }
    )
    refresh = issuer.post_token(
        grant_type="password",
        username=USER,
        password=PASSWORD,
        access_type="offline",
        scope=scope,
    )["refresh_token"]
    refresh_form = urlencode(
        {
            "grant_type": "refresh_token",
            "service": SERVICE,
            "refresh_token": str(refresh),
            "scope": scope,
        }
    )
    rows = [
        ("password", f"password grant (bcrypt {BCRYPT_COST})", password_form),
        ("refresh", "refresh-token grant", refresh_form),
    ]
    for grant, title, form in rows:
        for clients in GRANT_CLIENTS:
            w = ctx.results.workload(
                f"token_{grant}_grant_c{clients}",
                FAMILY,
                f"{title}, {clients} client{'s' if clients > 1 else ''}",
                "grants/s",
            )
            for _rep in range(mode.wrk_repeats):
                r = hey(
                    f"{issuer.url}/auth/token",
                    clients,
                    mode.wrk_seconds,
                    "-T",
                    "application/x-www-form-urlencoded",
                    "-d",
                    form,
                    method="POST",
                )
                w.add_load(TRUSTYARD, r, bcrypt_cost=BCRYPT_COST)
        ctx.say(f"{grant} grants done")


def run(ctx: Context) -> None:
    mode = ctx.mode
    issuer = TokenTrustyard(f"{TRUSTYARD}-token", ctx.workdir / "trustyard-token", workers=2)
    # the account exists before the server starts (the admin CLI creates the database)
    issuer.data_dir.mkdir(parents=True, exist_ok=True)
    issuer.admin("user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    started: list[Server] = [issuer]
    try:
        issuer.start()
        ctx.results.notes.append(
            f"token auth: trustyard in token mode (2 workers, ES256, x5c); user '{USER}' "
            f"created with `trustyard admin user add` at bcrypt cost {BCRYPT_COST} "
            "(BENCH_BCRYPT_COST; the server's default is 12); load generator hey for every "
            "token row"
        )
        _grant_rows(ctx, issuer)

        push = issuer.post_token(
            grant_type="password",
            username=USER,
            password=PASSWORD,
            scope=f"repository:{REPO}:pull,push",
        )["token"]
        pull = str(
            issuer.post_token(
                grant_type="password",
                username=USER,
                password=PASSWORD,
                scope=f"repository:{REPO}:pull",
            )["token"]
        )
        reference = TokenReference(
            f"{REFERENCE}-token",
            ctx.workdir / "reference-token",
            issuer_url=issuer.url,
            cert=issuer.data_dir / "auth" / "token-signing" / "cert.pem",
        )
        reference.start()
        started.append(reference)
        # auth none: a fresh trustyard with the same flags, so both sides are equally new
        plain = TrustyardServer(f"{TRUSTYARD}-none", ctx.workdir / "trustyard-none", workers=2)
        plain.start()
        started.append(plain)
        image = small_image(1024, layers=1, seed="token-bench")
        targets: dict[str, dict[str, Server]] = {
            "none": {TRUSTYARD: plain, REFERENCE: ctx.servers[REFERENCE]},
            "token": {TRUSTYARD: issuer, REFERENCE: reference},
        }
        for auth, servers in targets.items():
            for server in servers.values():
                if auth == "token":
                    conn: Connection = AuthorizedConnection(
                        "127.0.0.1", server.port, f"Bearer {push}"
                    )
                else:
                    conn = server.connect()
                with conn:
                    push_image(conn, REPO, TAG, image)
        headers = {
            "none": ["-H", f"Accept: {ACCEPT}"],
            "token": ["-H", f"Accept: {ACCEPT}", "-H", f"Authorization: Bearer {pull}"],
        }
        for auth, servers in targets.items():  # warm up every path once (token caches too)
            for server in servers.values():
                url = f"{server.url}/v2/{REPO}/manifests/{TAG}"
                hey(url, 4, 1, *headers[auth], method="HEAD")
        for clients in HEAD_CLIENTS:
            rows = {
                auth: ctx.results.workload(
                    f"token_head_{auth}_c{clients}",
                    FAMILY,
                    f"HEAD by tag, {clients} client{'s' if clients > 1 else ''}, "
                    + ("auth none" if auth == "none" else "Bearer token"),
                    "req/s",
                )
                for auth in targets
            }
            for rep in range(HEAD_REPEATS if mode.name == FULL.name else mode.wrk_repeats):
                # none and token back to back per server, the order alternating per repetition;
                # the overhead is also taken per adjacent pair (robust to a drifting load)
                order = ("none", "token") if rep % 2 == 0 else ("token", "none")
                for name in (TRUSTYARD, REFERENCE):
                    seen = {}
                    for auth in order:
                        server = targets[auth][name]
                        r = measured(
                            server,
                            f"{server.url}/v2/{REPO}/manifests/{TAG}",
                            clients,
                            mode.wrk_seconds,
                            *headers[auth],
                        )
                        seen[auth] = r
                    for auth, r in seen.items():
                        extra = {
                            k: r[k] for k in ("p50_ms", "p99_ms", "errors", "cpu_us_per_request")
                        }
                        if auth == "token":
                            none = seen["none"]
                            extra["overhead_pct"] = 100 * (1 - r["rps"] / none["rps"])
                            extra["cpu_overhead_pct"] = 100 * (
                                r["cpu_us_per_request"] / none["cpu_us_per_request"] - 1
                            )
                        rows[auth].add(name, r["rps"], **extra)
            ctx.say(f"HEAD with and without a token, {clients} clients done")
    finally:
        for server in reversed(started):
            server.stop()
