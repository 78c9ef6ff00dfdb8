"""The endpoint behind ``shvit-edge results listen``: phone harness apps POST their result documents here.

Pairing
-------
The host prints (and shows as a terminal QR code) one JSON object, ``{"url": "http://HOST:PORT/results",
"token": "TOKEN"}``. An app scans or is given it, keeps both values, and sends each finished run's result
document to ``url`` with ``token``. The token is a new random one per ``listen`` unless the user names one.

What an app sends
-----------------
One request per connection (the server answers ``Connection: close`` and closes it)::

    POST /results HTTP/1.1
    Host: HOST:PORT
    Authorization: Bearer TOKEN          (or: X-Shvit-Edge-Token: TOKEN)
    Content-Type: application/json       (not checked)
    Content-Length: N                    (required; no Transfer-Encoding, so no chunked bodies)
    Expect: 100-continue                 (optional: a refusal then comes before the body is sent)

    <N bytes: one result document, JSON, at most 32 MiB by default>

The path is exactly ``/results`` (no query string). The server hands the body's bytes, unparsed, to the results
store; it never follows, fetches or executes anything in a request, and no response echoes a request header.

What comes back
---------------
Always JSON (``Content-Type: application/json``): ``{"stored": {...}}`` (what the store kept) on success,
``{"error": "<one line>"}`` otherwise. A response to ``HEAD`` has the headers only.

======  ==================================================================  =================================
status  when                                                                what the app should do
======  ==================================================================  =================================
201     stored; the body is ``{"stored": ...}``                             done
400     a malformed request line or headers, a ``Transfer-Encoding``, a     fix the request
        Content-Length that is not one non-negative integer, a body
        shorter than its Content-Length
401     no token, or a wrong one (``WWW-Authenticate: Bearer``)             pair again
404     a path other than ``/results``                                      use the paired url
405     a method other than POST on ``/results`` (``Allow: POST``)          use POST
408     the request line, headers or body did not arrive in time            retry
411     no Content-Length                                                   send one
413     a Content-Length over the limit (the body is not read)              do not retry this document
414     a request line over 64 KiB                                          fix the request
422     the store refused the document (not a result document, or not       do not retry this document
        a valid one): nothing was stored; ``error`` says why
429     too many requests from this address (``Retry-After``: seconds)      wait, then retry
431     headers too large (a line over 64 KiB, or over 100 headers)         fix the request
500     the store failed unexpectedly (the host's log has the details)      retry later
503     too many connections at once                                        retry shortly
505     an HTTP version other than 1.x                                      use HTTP/1.1
======  ==================================================================  =================================

The checks run in this order, and the first that fails answers: the rate limit (every request counts, also one
without a token, so a token guesser is throttled), the path, the method, the token, the framing
(Transfer-Encoding, Content-Length, the size limit), then the body is read and handed to the store. Nothing
reaches the store without the token, and the token is checked before any body byte is read.

The store behind :data:`Accept` is one SQLite file: calls to it are serialized.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import math
import re
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from shvit_edge.errors import InputError, UsageError, describe_exception

DEFAULT_PORT = 8765
MAX_BODY_BYTES = 32 << 20      # a result document with raw outputs inline is at most a few MB
#: the one path that takes documents
RESULTS_PATH = "/results"
#: the token header for clients that cannot set ``Authorization``
TOKEN_HEADER = "X-Shvit-Edge-Token"
#: seconds a connection may stay silent, and the time the request line and headers get in all
SOCKET_TIMEOUT = 30.0
#: bytes per second a body must at least average: a body of N bytes gets SOCKET_TIMEOUT + N / MIN_BODY_RATE s
MIN_BODY_RATE = 64 << 10
#: connections handled at once; one more gets a 503 at once
MAX_CONNECTIONS = 64
#: after a response, the client's unread bytes are drained for at most this long (and this many bytes) before
#: the socket closes, so that closing over unread data (a TCP reset) does not destroy the response in flight
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20

Accept = Callable[[bytes, str], dict]  # (body, origin) -> what was stored (JSON-ready); raises InputError

_TOKEN_RE = re.compile(r"[\x21-\x7e]+")       # visible ASCII: what fits in a header as it is
_LENGTH_RE = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ListenOptions:
    """Where and how ``results listen`` listens."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT           # 0: any free port
    token: str = ""                    # "" -> a new one (secrets.token_urlsafe(24))
    max_body_bytes: int = MAX_BODY_BYTES
    rate_per_minute: int = 60          # per client address; token bucket, burst = rate_per_minute
    socket_timeout: float = SOCKET_TIMEOUT


# ----------------------------------------------------------------------------------------------------- addresses

def _bare(host: str) -> str:
    """``[::1]`` -> ``::1``: a host as a socket takes it."""
    return host.strip().removeprefix("[").removesuffix("]")


def _is_any(host: str) -> bool:
    return _bare(host) in ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name; never resolved) names this machine only: only this machine can
    reach a server listening there."""
    bare = _bare(host).lower()
    if bare == "localhost" or bare.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _lan_address(ipv6_too: bool) -> str:
    """This machine's address on its network, best effort: the source address the kernel picks for a route to
    a private address (a UDP connect sends no packet); the host name when there is no such route."""
    probes = [(socket.AF_INET, ("10.254.254.254", 1))]
    if ipv6_too:
        probes.append((socket.AF_INET6, ("fd00::1", 1)))
    for family, probe in probes:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect(probe)
                address = sock.getsockname()[0]
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except (OSError, ValueError):
            continue
        if not (ip.is_loopback or ip.is_unspecified or ip.is_link_local):
            return str(ip)
    return socket.gethostname()


def pairing(options: ListenOptions, port: int) -> dict:
    """What an app needs to send results here: ``{"url": "http://HOST:PORT/results", "token": TOKEN}``.

    ``options.token`` must be the server's token (:func:`serve` yields it). A server on every interface
    (``0.0.0.0``, ``::``) is named by this machine's LAN address, best effort (the host name otherwise)."""
    if not options.token:
        raise UsageError("pairing needs the server's token (serve() yields it)")
    host = _bare(options.host)
    if _is_any(host):
        host = _lan_address(ipv6_too=host == "::")
    if ":" in host:
        host = f"[{host}]"
    return {"url": f"http://{host}:{port}{RESULTS_PATH}", "token": options.token}


def pairing_qr(pairing: dict) -> str:
    """The terminal QR code (segno, compact: two rows of modules per line) of ``json.dumps(pairing)``."""
    try:
        import segno
    except ImportError as exc:
        raise UsageError("the pairing QR code needs segno: pip install segno") from exc
    out = io.StringIO()
    segno.make(json.dumps(pairing), micro=False).terminal(out=out, compact=True)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------- the server

def _printable(text: str | None, limit: int = 200) -> str:
    """A request's text for a log line: control and non-ASCII characters escaped (no terminal escapes from a
    client reach the terminal), at most ``limit`` characters."""
    if not text:
        return "-"
    out = "".join(ch if " " <= ch <= "~" else f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"
                  for ch in text[: limit + 1])
    return out if len(out) <= limit else out[:limit] + "..."


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:500]


def _client_ip(address: str) -> str:
    """A client's address as an app author would write it: an IPv4 client of a dual-stack (``::``) server
    arrives as ``::ffff:a.b.c.d``, and is ``a.b.c.d`` here (in the origin, the log and the rate limit)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return address


class _RateLimiter:
    """A token bucket per client address: ``per_minute`` requests in a burst, refilled at ``per_minute`` a
    minute."""

    _PRUNE_AT = 4096

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one request from ``key``'s bucket: 0.0 when allowed, else the seconds until one is."""
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if len(self._buckets) >= self._PRUNE_AT:
                self._buckets = {k: (t, s) for k, (t, s) in self._buckets.items()
                                 if t + (now - s) * self.rate < self.capacity}
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class _State:
    """What every handler thread shares."""

    def __init__(self, options: ListenOptions, accept: Accept, log: Callable[[str], None]):
        self.options = options
        self.token = options.token
        self.token_bytes = options.token.encode("ascii")
        self.accept = accept
        self.accept_lock = threading.Lock()
        self.limiter = _RateLimiter(options.rate_per_minute)
        self._log = log
        self._log_lock = threading.Lock()

    def log(self, line: str) -> None:
        """One line to the caller's log; a failing log never fails a request."""
        try:
            with self._log_lock:
                self._log(line)
        except Exception:  # noqa: BLE001 - the log is the caller's; a request must not die of it
            pass


class _DeadlineReader(io.RawIOBase):
    """A socket's reading side that gives up at a deadline (``TimeoutError``), however slowly the client
    trickles bytes: each receive waits at most ``idle`` seconds and never past ``deadline``."""

    def __init__(self, sock: socket.socket, idle: float):
        super().__init__()
        self._sock = sock
        self._idle = idle
        self.deadline = time.monotonic() + idle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(min(self._idle, remaining))
        return self._sock.recv_into(buffer)


class _SocketWriter(io.RawIOBase):
    """``wfile`` for the base class's code paths: every write is a ``sendall``."""

    def __init__(self, sock: socket.socket):
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._sock.sendall(data)
        return len(data)


_FIXED_REASONS = {
    HTTPStatus.BAD_REQUEST: "malformed request line or headers",
    HTTPStatus.REQUEST_URI_TOO_LONG: "request line too long",
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "request headers too large",
    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED: "HTTP version not supported: use HTTP/1.1",
}


class _Handler(BaseHTTPRequestHandler):
    """One request per connection, answered by the rules in the module's docstring."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"   # a two-word request line still gets a status line back
    server: _Server

    # -- the connection

    def setup(self) -> None:
        self.state: _State = self.server.state
        self.client = _client_ip(str(self.client_address[0]))
        self.connection = self.request
        self._reader = _DeadlineReader(self.connection, self.state.options.socket_timeout)
        self.rfile = io.BufferedReader(self._reader, 65536)
        self.wfile = _SocketWriter(self.connection)
        self._responded = False
        self._expect_continue = False
        self.command = None
        self.path = None
        self.requestline = ""

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        """After the response: stop sending, and drain what the client still sends (bounded) so the close does
        not reset the connection under a response the client has not read yet."""
        try:
            if self._responded:
                self.connection.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + min(LINGER_SECONDS, self.state.options.socket_timeout)
                drained = 0
                while drained < LINGER_BYTES:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self.connection.settimeout(remaining)
                    chunk = self.connection.recv(65536)
                    if not chunk:
                        break
                    drained += len(chunk)
        except OSError:
            pass

    # -- the base class's hooks, kept quiet (every request gets exactly one log line, from _respond)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        pass

    def log_request(self, code="-", size="-") -> None:
        pass

    def handle_expect_100(self) -> bool:
        """Defer the 100 Continue until the token and the length have passed: a refusal comes first."""
        self._expect_continue = True
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's refusals (a malformed request line or header), as JSON with a fixed reason."""
        status = HTTPStatus(code)
        self._respond(status, _FIXED_REASONS.get(status, status.phrase.lower()))

    # -- one request

    def handle_one_request(self) -> None:
        client = self.client
        try:
            self._one_request(client)
        except TimeoutError:
            self._respond(HTTPStatus.REQUEST_TIMEOUT, "the request did not arrive in time")
        except OSError as exc:   # the client went away mid-request: nobody to answer
            if not self._responded:
                self._log_line(client, "-", f"connection lost: {describe_exception(exc)}")
        except Exception as exc:  # noqa: BLE001 - a bug here must not print a traceback or kill the server
            self._respond(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}",
                          log_reason=f"internal error: {describe_exception(exc)}")

    def _one_request(self, client: str) -> None:
        wait = self.state.limiter.take(client)   # every connection counts, even a malformed one
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.raw_requestline:
            return  # connected and closed without a request: nothing to answer
        if not self.raw_requestline.strip():
            self._respond(HTTPStatus.BAD_REQUEST, "empty request line")
            return
        if not self.parse_request():
            return  # send_error answered
        if wait > 0:
            self._respond(HTTPStatus.TOO_MANY_REQUESTS, f"too many requests: retry after {math.ceil(wait)} s",
                          headers={"Retry-After": str(max(1, math.ceil(wait)))})
            return
        target = self.requestline.split()[1]   # as sent (parse_request folds a leading "//")
        if target != RESULTS_PATH:
            self._respond(HTTPStatus.NOT_FOUND, f"not found: only POST {RESULTS_PATH}")
            return
        if self.command != "POST":
            self._respond(HTTPStatus.METHOD_NOT_ALLOWED, f"method not allowed: only POST {RESULTS_PATH}",
                          headers={"Allow": "POST"})
            return
        refusal = self._token_refusal()
        if refusal:
            self._respond(HTTPStatus.UNAUTHORIZED, refusal, headers={"WWW-Authenticate": "Bearer"})
            return
        length = self._content_length()
        if length is None:
            return  # answered
        if self._expect_continue:
            self.connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._reader.deadline = time.monotonic() + self.state.options.socket_timeout + length / MIN_BODY_RATE
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self._respond(HTTPStatus.BAD_REQUEST,
                          f"body shorter than its Content-Length: {len(body)} of {length} bytes arrived")
            return
        self._store(body, client)

    def _token_refusal(self) -> str | None:
        """Why the request's token does not let it in (None: it does). Every token it carries must match."""
        offered: list[str] = []
        other_scheme = False
        for value in self.headers.get_all("Authorization") or []:
            scheme, _, credentials = str(value).strip().partition(" ")
            if scheme.lower() == "bearer":
                offered.append(credentials.strip())
            else:
                other_scheme = True
        offered += [str(value).strip() for value in self.headers.get_all(TOKEN_HEADER) or []]
        if not offered:
            if other_scheme:
                return "unauthorized: send Authorization: Bearer <token>"
            return f"unauthorized: no token (send Authorization: Bearer <token> or {TOKEN_HEADER})"
        for token in offered:
            if not hmac.compare_digest(token.encode("utf-8", "replace"), self.state.token_bytes):
                return "unauthorized: wrong token"
        return None

    def _content_length(self) -> int | None:
        """The body's announced length, or None after answering why it cannot be used."""
        if self.headers.get_all("Transfer-Encoding"):
            self._respond(HTTPStatus.BAD_REQUEST,
                          "Transfer-Encoding is not supported: send the body with a Content-Length")
            return None
        values = self.headers.get_all("Content-Length") or []
        if not values:
            self._respond(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return None
        text = str(values[0]).strip()
        if len(values) > 1 or not _LENGTH_RE.fullmatch(text):
            self._respond(HTTPStatus.BAD_REQUEST, "Content-Length must be one non-negative integer")
            return None
        limit = self.state.options.max_body_bytes
        digits = text.lstrip("0") or "0"
        if len(digits) > 18 or int(digits) > limit:
            self._respond(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                          f"body too large: over the limit of {limit} bytes")
            return None
        return int(digits)

    def _store(self, body: bytes, client: str) -> None:
        try:
            with self.state.accept_lock:
                stored = self.state.accept(body, f"listen:{client}")
        except InputError as exc:
            self._respond(HTTPStatus.UNPROCESSABLE_ENTITY, _one_line(exc))
            return
        except Exception as exc:  # noqa: BLE001 - the client learns the type only; the log gets one line
            self._respond(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}",
                          log_reason=f"internal error: {describe_exception(exc)}")
            return
        self._respond(HTTPStatus.CREATED, "stored", payload={"stored": stored})

    # -- the response

    def _respond(self, status: HTTPStatus, reason: str, payload: dict | None = None,
                 headers: dict[str, str] | None = None, log_reason: str | None = None) -> None:
        """The one response to this request (later calls do nothing), and its log line."""
        if self._responded:
            return
        self._responded = True
        body = json.dumps(payload if payload is not None else {"error": reason}, default=str).encode("utf-8")
        lines = [f"HTTP/1.1 {status.value} {status.phrase}",
                 "Content-Type: application/json",
                 f"Content-Length: {len(body)}",
                 "Connection: close",
                 "Cache-Control: no-store",
                 "X-Content-Type-Options: nosniff"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.command != "HEAD":
            data += body
        note = ""
        try:
            self.connection.settimeout(self.state.options.socket_timeout)
            self.connection.sendall(data)
        except OSError as exc:
            note = f" (not delivered: {type(exc).__name__})"
        self._log_line(self.client, str(status.value), (log_reason or reason) + note)

    def _log_line(self, client: str, status: str, reason: str) -> None:
        self.state.log(f"{client} {_printable(self.command)} {_printable(self.path)} {status} "
                       f"{_printable(reason, 600)}")


class _Server(ThreadingHTTPServer):
    """A threading HTTP server for IPv4 or IPv6 that never prints (errors go to the log, one line each) and
    turns away connections beyond :data:`MAX_CONNECTIONS`."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, state: _State):
        self.address_family = family
        self.state = state
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and _bare(self.server_address[0]) == "::":
            try:  # "::" also takes IPv4 clients
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except (AttributeError, OSError):
                pass
        socketserver.TCPServer.server_bind(self)   # not HTTPServer's: its getfqdn() can wait on DNS
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            body = json.dumps({"error": "server busy: too many connections, retry shortly"}).encode()
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n" % len(body)
                                + body)
            except OSError:
                pass
            self.state.log(f"{_client_ip(str(client_address[0]))} - - 503 server busy: too many connections")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        what = describe_exception(exc) if exc is not None else "unknown error"
        self.state.log(f"{_client_ip(str(client_address[0]))} - - - connection error: {what}")


def _check(options: ListenOptions) -> ListenOptions:
    """The options, checked, with the token filled in."""
    if not 0 <= options.port <= 65535:
        raise UsageError(f"port must be 0..65535, not {options.port}")
    if options.max_body_bytes < 1:
        raise UsageError(f"max_body_bytes must be at least 1, not {options.max_body_bytes}")
    if options.rate_per_minute < 1:
        raise UsageError(f"rate_per_minute must be at least 1, not {options.rate_per_minute}")
    if not options.socket_timeout > 0:
        raise UsageError(f"socket_timeout must be positive, not {options.socket_timeout}")
    if options.token and not _TOKEN_RE.fullmatch(options.token):
        raise UsageError("the token must be visible ASCII characters without spaces")
    return replace(options, host=_bare(options.host), token=options.token or secrets.token_urlsafe(24))


def _family(host: str) -> socket.AddressFamily:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        try:
            return socket.getaddrinfo(host or None, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}: {exc}") from exc
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def _bind(options: ListenOptions, accept: Accept, log: Callable[[str], None]) -> _Server:
    options = _check(options)
    try:
        return _Server((options.host, options.port), _family(options.host), _State(options, accept, log))
    except OSError as exc:
        raise UsageError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from exc


def _close(server: _Server) -> None:
    """Stop taking connections, and let a store call in progress finish (bounded) before the process may end."""
    server.server_close()
    if server.state.accept_lock.acquire(timeout=max(10.0, server.state.options.socket_timeout)):
        server.state.accept_lock.release()


@contextmanager
def serve(options: ListenOptions, accept: Accept,
          log: Callable[[str], None]) -> Iterator[tuple[ThreadingHTTPServer, int, str]]:
    """Listen in a daemon thread; yields ``(server, bound port, token)``. On exit the server stops and its
    socket closes. Raises :class:`UsageError` when it cannot listen."""
    server = _bind(options, accept, log)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="shvit-edge-listen", daemon=True)
    thread.start()
    try:
        yield server, int(server.server_address[1]), server.state.token
    finally:
        server.shutdown()
        thread.join(timeout=5)
        _close(server)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def serve_forever(options: ListenOptions, accept: Accept, log: Callable[[str], None],
                  ready: Callable[[dict], None]) -> None:
    """For the CLI: listen, call ``ready(pairing)`` once listening, serve until Ctrl-C or SIGTERM, then close.
    Raises :class:`UsageError` when it cannot listen."""
    server = _bind(options, accept, log)
    previous = None
    try:
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _interrupt)
        ready(pairing(server.state.options, int(server.server_address[1])))
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _close(server)
