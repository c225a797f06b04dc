"""UI handlers: parse the request, ask `registry.browse`, render a template. Thin, like v2.py.

Access is decided here once per request (`Viewer`): the same `AccessPolicy` the token issuer
grants /v2 scopes from (token mode), any logged-in account (htpasswd mode, as /v2), anyone
(auth off, as /v2). Hidden and missing repositories are the same 404.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from trustyard.auth.users import ANONYMOUS, AuthFailed, Principal, RateLimited
from trustyard.config import Settings
from trustyard.http.bodies import BodyTooLarge, read_bounded
from trustyard.http.params import NulInParameter
from trustyard.http.token_routes import audit_context, audit_log, client_address
from trustyard.http.ui.session import Session, Sessions, binding
from trustyard.metadata.audit_base import ANONYMOUS as AUDIT_ANONYMOUS
from trustyard.metadata.audit_base import RequestContext, current_request
from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.registry.browse import Browse, NotVisible
from trustyard.registry.mirror import Mirrors
from trustyard.wiring.auth import AuthRuntime
from trustyard.wiring.ui import session_key

if TYPE_CHECKING:
    from jinja2 import Environment

log = structlog.get_logger("trustyard.ui")
HERE = Path(__file__).parent
MAX_FORM_BYTES = 8192
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)  # pragma: no cover


def _when(value: float | None) -> str:
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> Environment:
    """Imported on the first page, not with the app: a worker that serves only /v2 never
    holds jinja2 (~2 MiB, docs/benchmarks.md)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = _size
    env.filters["when"] = _when
    env.filters["urlpath"] = lambda text: quote(str(text), safe="/:@")
    return env


@dataclass(frozen=True)
class Viewer:
    """Who asks, and the /v2 API's access rule for them."""

    principal: Principal
    mode: str
    runtime: AuthRuntime | None
    delete_enabled: bool

    @property
    def logged_in(self) -> bool:
        return not self.principal.anonymous

    async def _allowed(self, name: str) -> set[str]:
        if self.mode == "none":
            return {"pull", "push", "delete"}
        if self.mode == "htpasswd":
            return {"pull", "push", "delete"} if self.logged_in else set()
        assert self.runtime is not None
        return await self.runtime.policy.allowed(self.principal, "repository", name)

    async def can_pull(self, name: str) -> bool:
        allowed = await self._allowed(name)
        return "pull" in allowed or "*" in allowed

    async def can_delete(self, name: str) -> bool:
        allowed = await self._allowed(name)
        return self.delete_enabled and ("delete" in allowed or "*" in allowed)

    @property
    def admin(self) -> bool:
        return self.mode != "none" and self.principal.admin


class UI:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sessions: Sessions | None = None

    @functools.cached_property
    def env(self) -> Environment:
        return _environment()

    def sessions(self) -> Sessions:
        if self._sessions is None:  # the data dir exists once the lifespan opened it
            self._sessions = Sessions(
                session_key(self.settings.data_dir),
                self.settings.ui_session_seconds,
                secure=self.settings.tls_cert is not None,
            )
        return self._sessions

    # -- plumbing ------------------------------------------------------------------------------
    @staticmethod
    def browse(request: Request) -> Browse:
        browse: Browse = request.app.state.browse
        return browse

    async def viewer(self, request: Request) -> tuple[Viewer, Session]:
        session = self.sessions().load(request)
        runtime: AuthRuntime | None = getattr(request.app.state, "auth", None)
        mode = self.settings.auth.mode if runtime is not None else "none"
        principal = ANONYMOUS
        if session.user and runtime is not None and mode != "none":
            principal, session = await self._principal(runtime, session)
        # The audit log's actor and client for what this request does (a delete, a login).
        client = audit_context(request.scope).client
        current_request.set(RequestContext(principal.name or AUDIT_ANONYMOUS, client))
        return Viewer(principal, mode, runtime, self.settings.delete_enabled), session

    @staticmethod
    async def _principal(runtime: AuthRuntime, session: Session) -> tuple[Principal, Session]:
        """The session's account if it still exists, may log in and has the same secret."""
        account = await runtime.store.get_account(session.user)
        if account is not None:
            if (
                runtime.accounts.usable(account) is None
                and binding(account.secret_hash) == session.binding
            ):
                return await runtime.accounts.principal(account), session
        elif runtime.accounts.htpasswd is not None:
            entry = runtime.accounts.htpasswd.entries().get(session.user)
            if entry is not None and binding(entry) == session.binding:
                return Principal(session.user, "user"), session
        return ANONYMOUS, Session.new()

    def render(
        self,
        request: Request,
        viewer: Viewer,
        session: Session,
        template: str,
        status: int = 200,
        **context: Any,
    ) -> Response:
        html = self.env.get_template(template).render(
            viewer=viewer, csrf=session.csrf, request=request, host=request.url.netloc, **context
        )
        response = HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)
        if session.fresh:
            self.sessions().save(response, session, request)
        return response

    def redirect(self, request: Request, url: str, session: Session | None = None) -> Response:
        response = RedirectResponse(url, status_code=303, headers=_SECURITY_HEADERS)
        if session is not None:
            self.sessions().save(response, session, request)
        return response

    def not_found(self, request: Request, viewer: Viewer, session: Session) -> Response:
        return self.render(
            request, viewer, session, "error.html", 404, message="No such repository or image."
        )

    async def form(self, request: Request, session: Session) -> dict[str, str] | None:
        """The urlencoded body, or None when it is too large or its CSRF token is wrong."""
        try:
            body = await read_bounded(request, MAX_FORM_BYTES, "form")
        except BodyTooLarge:
            return None
        try:
            values = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            return None
        form = {k: v[0] for k, v in values.items()}
        return form if session.csrf_ok(form.get("csrf")) else None

    def refused(self, request: Request, viewer: Viewer, session: Session) -> Response:
        log.warning("ui_csrf_refused", path=request.url.path, client=client_address(request))
        message = "The form's security token is missing or out of date: reload the page and retry."
        return self.render(request, viewer, session, "error.html", 403, message=message)

    # -- pages ---------------------------------------------------------------------------------
    async def repositories(self, request: Request) -> Response:
        viewer, session = await self.viewer(request)
        try:
            text, after = _query(request, "q", 255), _query(request, "after", 255) or None
        except RegistryError as exc:
            return self.render(
                request, viewer, session, "error.html", exc.status, message=exc.message
            )
        page = await self.browse(request).repositories(text, after, viewer.can_pull)
        return self.render(request, viewer, session, "repositories.html", q=text, page=page)

    async def repository_path(self, request: Request) -> Response:
        """`/ui/repositories/<name>`, `…/<name>/manifests/<digest>`, `…/<name>/-/trust`,
        `…/<name>/-/delete` (names never have a `-` component, digests never a `/`)."""
        rest: str = request.path_params["rest"]
        viewer, session = await self.viewer(request)
        try:
            if "/-/" in rest:
                name, _, action = rest.partition("/-/")
                if action == "trust" and request.method == "GET":
                    return await self.trust(request, viewer, session, name)
                if action == "delete":
                    return await self.delete(request, viewer, session, name)
                return self.not_found(request, viewer, session)
            if request.method != "GET":
                return self.not_found(request, viewer, session)
            name, sep, digest = rest.rpartition("/manifests/")
            if sep and Digest.is_digest(digest):
                return await self.image(request, viewer, session, name, digest)
            return await self.repository(request, viewer, session, rest)
        except NotVisible:
            return self.not_found(request, viewer, session)
        except RegistryError as exc:
            return self.render(
                request, viewer, session, "error.html", exc.status, message=exc.message
            )

    async def repository(
        self, request: Request, viewer: Viewer, session: Session, name: str
    ) -> Response:
        after = _query(request, "after", 128) or None
        page, count = await self.browse(request).tags(name, after, viewer.can_pull)
        return self.render(
            request,
            viewer,
            session,
            "repository.html",
            name=name,
            page=page,
            count=count,
            can_delete=await viewer.can_delete(name) and _mirrors(request, name) is None,
        )

    async def image(
        self, request: Request, viewer: Viewer, session: Session, name: str, digest: str
    ) -> Response:
        browse = self.browse(request)
        record = await browse.record(name, digest, viewer.can_pull)
        image = await browse.image(record)
        tag = _query(request, "tag", 128) or None
        verdict = await browse.verdict(record, tag if tag in image.tags else None)
        signatures = await browse.signatures_of(record, verdict)
        return self.render(
            request,
            viewer,
            session,
            "image.html",
            image=image,
            verdict=verdict,
            signatures=signatures,
            tag=tag if tag in image.tags else None,
        )

    async def trust(
        self, request: Request, viewer: Viewer, session: Session, name: str
    ) -> Response:
        guns = await self.browse(request).trust_data(name, viewer.can_pull)
        return self.render(request, viewer, session, "trust.html", name=name, guns=guns)

    async def delete(
        self, request: Request, viewer: Viewer, session: Session, name: str
    ) -> Response:
        """GET: the confirmation page; POST (with the CSRF token): delete the tag."""
        if not await viewer.can_pull(name) or not await viewer.can_delete(name):
            # Who may pull but not delete sees a 404 too: the page offers no delete button.
            raise NotVisible(name)
        mirrors = _mirrors(request, name)
        if mirrors is not None:
            mirrors.refuse_push(name)  # 403 as on /v2: the upstream owns a mirror's tags
        if request.method == "GET":
            tag = _query(request, "tag", 128)
            await self.browse(request).tags(name, None, viewer.can_pull, limit=1)
            return self.render(request, viewer, session, "delete.html", name=name, tag=tag)
        form = await self.form(request, session)
        if form is None:
            return self.refused(request, viewer, session)
        tag = form.get("tag", "")
        actor = viewer.principal.name or None
        await self.browse(request).delete_tag(name, tag, viewer.can_pull, actor)
        log.info("ui_tag_deleted", repository=name, tag=tag, actor=actor)
        return self.redirect(request, f"/ui/repositories/{quote(name)}")

    async def login_page(self, request: Request) -> Response:
        viewer, session = await self.viewer(request)
        return self.render(request, viewer, session, "login.html", error=None)

    async def login(self, request: Request) -> Response:
        viewer, session = await self.viewer(request)
        form = await self.form(request, session)
        if form is None:
            return self.refused(request, viewer, session)
        runtime: AuthRuntime | None = getattr(request.app.state, "auth", None)
        if runtime is None or self.settings.auth.mode == "none":
            message = "Authentication is off on this registry: everyone sees everything."
            return self.render(request, viewer, session, "login.html", 400, error=message)
        name, password = form.get("username", "")[:255], form.get("password", "")
        audit = audit_log(request.scope)
        try:
            principal = await runtime.accounts.authenticate(name, password, client_address(request))
        except RateLimited as exc:
            log.warning("ui_login_rate_limited", account=name[:64], client=client_address(request))
            message = f"Too many failed logins; retry in {exc.retry_after} s."
            return self.render(request, viewer, session, "login.html", 429, error=message)
        except AuthFailed as exc:
            log.warning("ui_login_failed", reason=exc.reason, client=client_address(request))
            if audit is not None:
                audit.record(
                    "login",
                    actor=name[:64],
                    outcome="failure",
                    detail={"via": "ui", "reason": exc.reason},
                )
            message = "Wrong user name or password."
            return self.render(request, viewer, session, "login.html", 401, error=message)
        account = await runtime.store.get_account(principal.name)
        if account is not None:
            secret_hash = account.secret_hash
        else:
            assert runtime.accounts.htpasswd is not None
            secret_hash = runtime.accounts.htpasswd.entries().get(principal.name, "")
        if audit is not None:
            audit.record("login", actor=principal.name, outcome="success", detail={"via": "ui"})
        return self.redirect(request, "/ui/", Session.new(principal.name, binding(secret_hash)))

    async def logout(self, request: Request) -> Response:
        viewer, session = await self.viewer(request)
        if await self.form(request, session) is None:
            return self.refused(request, viewer, session)
        return self.redirect(request, "/ui/", Session.new())

    async def admin(self, request: Request) -> Response:
        viewer, session = await self.viewer(request)
        if not viewer.admin:
            return self.not_found(request, viewer, session)
        browse = self.browse(request)
        accounts, rules = await browse.accounts_and_rules()
        audit = await browse.recent_audit()
        return self.render(
            request, viewer, session, "admin.html", accounts=accounts, rules=rules, audit=audit
        )

    async def gc(self, request: Request) -> Response:
        viewer, session = await self.viewer(request)
        if not viewer.admin:
            return self.not_found(request, viewer, session)
        report = await self.browse(request).gc_dry_run()
        return self.render(request, viewer, session, "gc.html", report=report)


def _mirrors(request: Request, name: str) -> Mirrors | None:
    """The mirrors, when `name` is under a mirrored prefix (its tags are the upstream's)."""
    mirrors: Mirrors | None = getattr(request.app.state, "mirrors", None)
    return mirrors if mirrors is not None and mirrors.match(name) is not None else None


def _query(request: Request, name: str, limit: int) -> str:
    """A query parameter cut at `limit`; one with a NUL character is a 400 (PostgreSQL would
    refuse it in a query: a 500)."""
    value = request.query_params.get(name, "")[:limit]
    if "\x00" in value:
        raise NulInParameter(name)
    return value


def routes(settings: Settings) -> list[BaseRoute]:
    ui = UI(settings)

    async def slash(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    pages = [
        Route("/", ui.repositories, methods=["GET"]),
        Route("/login", ui.login_page, methods=["GET"]),
        Route("/login", ui.login, methods=["POST"]),
        Route("/logout", ui.logout, methods=["POST"]),
        Route("/admin", ui.admin, methods=["GET"]),
        Route("/admin/gc", ui.gc, methods=["GET"]),
        Route("/repositories/{rest:path}", ui.repository_path, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="ui-static"),
    ]
    return [Route("/ui", slash, methods=["GET"]), Mount("/ui", routes=pages)]
