"""A local browser viewer for ``rig live --serve``: an MJPEG stream and a small HTML page.

Standard library only (``http.server`` in a daemon thread). Endpoints::

    /              HTML page: the live view (input | depth | uncertainty) and a stats line
    /stream.mjpg   multipart/x-mixed-replace JPEG stream; ?frames=N ends it after N frames
    /frame.jpg     the latest frame (503 until the first one)
    /stats.json    frames published, latest frame index, the live loop's figures

Bound to 127.0.0.1 by default: only this machine can connect, no token. With any other ``--host``
(e.g. 0.0.0.0 to watch from a phone on the field laptop's hotspot) every request needs the token
printed once at start, as ``?token=…`` or in an ``X-Rig-Token`` / ``Authorization: Bearer`` header;
anything else gets 401. The token is compared in constant time.

A viewer cannot be held open: a client has ``REQUEST_DEADLINE_S`` to send a whole request line and
its headers (each read also times out after ``READ_TIMEOUT_S``), or its connection is closed; an
idle keep-alive connection gets the same deadline for its next request. At most
``max_connections`` (default ``MAX_CONNECTIONS``) connections are served at once; one more is
answered 503 and closed.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, quote, urlsplit

from rig.core.errors import RigError

BOUNDARY = "rigframe"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STREAM_IDLE_TIMEOUT_S = 30.0  # a stream with no new frame for this long ends (the client reconnects)
REQUEST_DEADLINE_S = 5.0  # the whole request line + headers must arrive within this
READ_TIMEOUT_S = 5.0  # any single read of the request
WRITE_TIMEOUT_S = 30.0  # a client that stops reading its stream for this long is dropped
MAX_CONNECTIONS = 32  # connections served at once (streams included); more get 503

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{background:#111;color:#ddd;font:14px sans-serif;margin:12px}}
img{{max-width:100%;border:1px solid #333}}#stats{{margin:6px 0;font-family:monospace}}</style>
</head><body data-frames="0">
<h1 style="font-size:16px">{title}</h1>
<div id="stats">waiting for frames…</div>
<img id="live" alt="live depth" src="{stream}">
<script>
const img = document.getElementById('live');
let loads = 0;
img.addEventListener('load', () => {{
  loads += 1;
  document.body.dataset.frames = String(loads);
  document.body.dataset.size = img.naturalWidth + 'x' + img.naturalHeight;
}});
async function poll() {{
  try {{
    const r = await fetch('{stats}', {{cache: 'no-store'}});
    const s = await r.json();
    const fps = (s.fps === undefined || s.fps === null) ? '-' : Number(s.fps).toFixed(1);
    document.getElementById('stats').textContent =
      'frame ' + s.latest_index + ' | published ' + s.published + ' | ' + fps + ' fps';
  }} catch (e) {{}}
  setTimeout(poll, 1000);
}}
poll();
</script></body></html>
"""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LiveServer:
    """Serves the latest published JPEG frame to browsers.

    host/port: where to listen (port 0 = any free port; :attr:`port` is the real one).
    token: required on non-loopback hosts; None = generate one there (``require_token=True`` forces
    one on loopback too). stats: a callable returning a JSON-able dict for /stats.json.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, token: str | None = None,
                 require_token: bool | None = None, title: str = "rig live",
                 stats: Callable[[], dict[str, Any]] | None = None, max_connections: int = MAX_CONNECTIONS,
                 request_deadline_s: float = REQUEST_DEADLINE_S) -> None:
        self.host = host
        self.max_connections = int(max_connections)
        self.request_deadline_s = float(request_deadline_s)
        self.requested_port = int(port)
        need = (not is_loopback(host)) if require_token is None else bool(require_token)
        self.token = (token or secrets.token_urlsafe(18)) if need else None
        self.title = title
        self.stats_fn = stats
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._index = -1
        self._closed = False
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = self.requested_port

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "LiveServer":
        server = self

        class Handler(_Handler):
            owner = server

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        slots = threading.BoundedSemaphore(self.max_connections)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = family

            def process_request(self, request: Any, client_address: Any) -> None:
                if not slots.acquire(blocking=False):  # full: answer 503 at once, hold nothing
                    _refuse_busy(request)
                    self.shutdown_request(request)
                    return
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    slots.release()
                    raise

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    slots.release()

        try:
            self._httpd = Server((self.host, self.requested_port), Handler)
        except OSError as e:
            raise RigError(f"cannot serve on {self.host}:{self.requested_port}: {e.strerror or e} "
                           "(choose another --port or --host)") from None
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="live-serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The page's URL (with the token when one is needed)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        q = f"?token={quote(self.token)}" if self.token else ""
        return f"http://{host}:{self.port}/{q}"

    # -- frames ----------------------------------------------------------------------------------
    def publish(self, jpeg: bytes, index: int = -1) -> None:
        """Make ``jpeg`` the current frame and wake every stream."""
        with self._cond:
            self._jpeg = bytes(jpeg)
            self._seq += 1
            self._index = int(index)
            self._cond.notify_all()

    def publish_rgb(self, rgb: Any, index: int = -1, quality: int = 80) -> None:
        from inference.live import encode_jpeg

        self.publish(encode_jpeg(rgb, quality), index)

    def wait_frame(self, after_seq: int, timeout_s: float) -> tuple[int, bytes | None]:
        """(seq, jpeg) of the first frame newer than ``after_seq`` (jpeg None on timeout/close)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._seq <= after_seq and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return self._seq, None
                self._cond.wait(min(left, 0.5))
            if self._closed:
                return self._seq, None
            return self._seq, self._jpeg

    def snapshot(self) -> tuple[int, int, bytes | None]:
        with self._cond:
            return self._seq, self._index, self._jpeg

    def authorised(self, query_token: str | None, headers: Any) -> bool:
        if self.token is None:
            return True
        candidates = [query_token, headers.get("X-Rig-Token")]
        auth = headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            candidates.append(auth[7:].strip())
        return any(c is not None and hmac.compare_digest(c.encode(), self.token.encode()) for c in candidates)


def _refuse_busy(request: Any) -> None:
    """503 to a connection over the limit (best effort: it must never block the accept loop)."""
    try:
        request.settimeout(0.5)
        request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                        b"Connection: close\r\n\r\n")
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    owner: LiveServer
    server_version = "rig-live/1"
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_S  # socket timeout of every read while the request arrives
    _deadline: threading.Timer | None = None

    # -- the request-read deadline ------------------------------------------------------------
    def _cut(self) -> None:
        """The client did not send its request in time: close the connection under it."""
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _arm(self) -> None:
        self._disarm()
        self.connection.settimeout(READ_TIMEOUT_S)
        self._deadline = threading.Timer(self.owner.request_deadline_s, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def handle_one_request(self) -> None:
        self._arm()  # the request line and headers (also the next one on a kept-alive connection)
        try:
            super().handle_one_request()
        finally:
            self._disarm()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self._disarm()  # the whole request is in: answering it (a stream) is not bound by the deadline
        self.connection.settimeout(WRITE_TIMEOUT_S)
        return ok

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        owner = self.owner
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        token = (query.get("token") or [None])[0]
        if not owner.authorised(token, self.headers):
            self._send(401, b"401: this viewer needs its token (?token=... as printed by rig live)\n",
                       "text/plain; charset=utf-8", {"WWW-Authenticate": 'Bearer realm="rig live"'})
            return
        suffix = f"?token={quote(owner.token)}" if owner.token else ""
        if parts.path in ("/", "/index.html"):
            page = PAGE.format(title=html.escape(owner.title), stream=f"stream.mjpg{suffix}",
                               stats=f"stats.json{suffix}")
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif parts.path == "/frame.jpg":
            _, _, jpeg = owner.snapshot()
            if jpeg is None:
                self._send(503, b"no frame yet\n", "text/plain; charset=utf-8", {"Retry-After": "1"})
            else:
                self._send(200, jpeg, "image/jpeg")
        elif parts.path == "/stats.json":
            seq, index, _ = owner.snapshot()
            stats: dict[str, Any] = {"published": seq, "latest_index": index}
            if owner.stats_fn is not None:
                try:
                    stats.update(owner.stats_fn())
                except Exception:  # noqa: BLE001 — stats must never break the page
                    pass
            self._send(200, json.dumps(stats, default=str).encode(), "application/json")
        elif parts.path == "/stream.mjpg":
            try:
                limit = int((query.get("frames") or ["0"])[0])
            except ValueError:
                limit = 0
            self._stream(limit)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _stream(self, limit: int) -> None:
        owner = self.owner
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        seq, _, jpeg = owner.snapshot()
        sent = 0
        if jpeg is None:
            seq = 0
        else:
            seq -= 1  # send the current frame first
        try:
            while limit <= 0 or sent < limit:
                seq, jpeg = owner.wait_frame(seq, STREAM_IDLE_TIMEOUT_S)
                if jpeg is None:
                    break
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                 .encode())
                self.wfile.write(jpeg)
                self.wfile.write(b"\r\n")
                self.wfile.flush()
                sent += 1
            self.wfile.write(f"--{BOUNDARY}--\r\n".encode())
        except OSError:  # the client went away, or stopped reading for WRITE_TIMEOUT_S
            pass
