"""HTTP front of a review session, on the standard library's ThreadingHTTPServer.

The standard library is enough for one annotator's page plus three JSON endpoints, and adds no
dependency to audit. Safety: it binds to 127.0.0.1 by default and then only answers requests whose
Host header names the loopback address (DNS rebinding); bound elsewhere, every API call must carry the
token printed at start. POST bodies must be small JSON objects with known fields; static files are a
fixed list read from the package, never a path taken from the URL; the page sets a strict
Content-Security-Policy and renders all data with textContent. The only file written is the label
stream, through the session. Each read of a request waits at most REQUEST_TIMEOUT seconds (a body
shorter than its Content-Length holds no thread), a response is sent within RESPONSE_TIMEOUT, a
request must carry one Host header, and a client that goes away mid-request or mid-response ends
its request quietly.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import orjson

from synpref.review.session import ReviewError, ReviewSession

MAX_BODY = 16 * 1024
REQUEST_TIMEOUT = 10.0  # seconds each read of a request may wait (a page sends a few hundred bytes)
RESPONSE_TIMEOUT = 120.0  # seconds to send a response: a long pair over a slow tunnel, not forever
STATIC = {  # URL path -> (package file, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/review.js": ("review.js", "text/javascript; charset=utf-8"),
    "/static/review.css": ("review.css", "text/css; charset=utf-8"),
}
DECIDE_FIELDS = {"id": str, "choice": str, "note": str, "seconds": (int, float)}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, session: ReviewSession, host: str, port: int, token: str | None,
                 request_timeout: float = REQUEST_TIMEOUT):
        self.session, self.token, self.request_timeout = session, token, request_timeout
        self.files = {path: (resources.files("synpref.review").joinpath("static", name).read_bytes(), kind)
                      for path, (name, kind) in STATIC.items()}
        super().__init__((host, port), ReviewHandler)
        bound_port = self.server_address[1]
        # Bound to loopback, a request naming any other host came through DNS rebinding: refuse it.
        self.allowed_hosts = ({f"{name}:{bound_port}" for name in ("127.0.0.1", "localhost", "[::1]")}
                              if token is None else None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that left (a closed tab, a reset connection) or timed out is nothing to report; any
        other error is printed as socketserver prints it."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class ReviewHandler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "synpref-review"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # every read of the request, headers and body
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: the terminal shows the URL and errors, not one line per keypress."""

    # -- plumbing ---------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.connection.settimeout(RESPONSE_TIMEOUT)  # the request is read: its timeout was for that
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, orjson.dumps(data))

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _allowed(self) -> bool:
        """Host check on loopback, token check elsewhere (API only: static files hold no data)."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:  # which one counts differs between proxies and servers: refuse
            self._error(HTTPStatus.BAD_REQUEST, "more than one Host header")
            return False
        allowed = self.server.allowed_hosts
        if allowed is not None and (hosts[0] if hosts else None) not in allowed:
            self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return False
        if self.server.token is not None and urlsplit(self.path).path.startswith("/api/"):
            given = self.headers.get("X-Review-Token") or ""
            if not hmac.compare_digest(given.encode(), self.server.token.encode()):
                self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong token (open the URL printed at start)")
                return False
        return True

    def _body(self) -> dict[str, Any] | None:
        """The request's JSON object, or None after answering with the reason it was refused."""
        if self.headers.get_content_type() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send Content-Type: application/json")
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            return None
        if not 0 <= length <= MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
            return None
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            self._error(HTTPStatus.REQUEST_TIMEOUT,
                        f"the body did not arrive within {self.server.request_timeout:g} s")
            return None
        if len(data) < length:
            self._error(HTTPStatus.BAD_REQUEST, f"the body ended after {len(data)} of its {length} bytes")
            return None
        try:
            body = orjson.loads(data or b"{}")
        except orjson.JSONDecodeError:
            self._error(HTTPStatus.BAD_REQUEST, "body is not JSON")
            return None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
            return None
        return body

    # -- routes -----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        if path == "/api/state":
            self._json(HTTPStatus.OK, self.server.session.state())
        elif path in self.server.files:
            body, kind = self.server.files[path]
            self._send(HTTPStatus.OK, body, kind)
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        if path not in ("/api/decide", "/api/undo"):
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        body = self._body()
        if body is None:
            return
        session = self.server.session
        try:
            if path == "/api/undo":
                if body:
                    raise ReviewError("undo takes an empty object")
                result: dict[str, Any] = {"undone": session.undo()}
            else:
                decision = _check_decide(body)
                entry = session.decide(decision["id"], decision["choice"], decision.get("note", ""),
                                       decision.get("seconds"))
                result = {"saved": entry["id"]}
        except ReviewError as error:
            self._error(error.status, str(error))
            return
        self._json(HTTPStatus.OK, {**result, **session.state()})


def _check_decide(body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - set(DECIDE_FIELDS)
    if unknown:
        raise ReviewError(f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in ("id", "choice"):
        if name not in body:
            raise ReviewError(f"field {name!r} is required")
    for name, kind in DECIDE_FIELDS.items():
        if name in body and (not isinstance(body[name], kind) or isinstance(body[name], bool)):
            raise ReviewError(f"field {name!r} has the wrong type")
    seconds = body.get("seconds")
    if seconds is not None and not 0 <= seconds <= 86400:
        raise ReviewError("field 'seconds' must be between 0 and 86400")
    return body


def make_server(session: ReviewSession, host: str = "127.0.0.1", port: int = 0,
                token: str | None = None, request_timeout: float = REQUEST_TIMEOUT) -> ReviewServer:
    """A server for the session; off loopback a token is required (one is made when none is given)."""
    if not is_loopback(host) and token is None:
        token = secrets.token_urlsafe(24)
    return ReviewServer(session, host, port, token, request_timeout)
