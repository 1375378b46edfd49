"""The browser viewer: plain HTTP (token rules, MJPEG parts are JPEG frames) and headless Chromium
(the page loads the stream; a screenshot shows the published image)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from rig.serve import BOUNDARY, LiveServer, is_loopback

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def red_left_blue_right(w: int = 200, h: int = 120) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (230, 20, 20)
    img[:, w // 2:] = (20, 20, 230)
    return img


class Publisher:
    """Publishes a frame every 50 ms (what the live loop's output stage does)."""

    def __init__(self, server: LiveServer, img: np.ndarray) -> None:
        self.server, self.img, self.stop = server, img, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            self.server.publish_rgb(self.img, i)
            i += 1
            self.stop.wait(0.05)

    def __enter__(self) -> "Publisher":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(2)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def jpeg_parts(body: bytes) -> list[bytes]:
    parts = []
    for chunk in body.split(f"--{BOUNDARY}".encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        assert b"Content-Type: image/jpeg" in head
        n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        parts.append(data[:n])
    return parts


def test_loopback_needs_no_token_and_streams_jpeg_frames():
    import cv2

    with LiveServer("127.0.0.1", 0) as server, Publisher(server, red_left_blue_right()):
        assert server.token is None and server.url == f"http://127.0.0.1:{server.port}/"
        status, page, headers = get(server.url)
        assert status == 200 and b'src="stream.mjpg"' in page and headers["Content-Type"].startswith("text/html")
        status, body, headers = get(server.url + "stream.mjpg?frames=3")
        assert status == 200 and headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        parts = jpeg_parts(body)
        assert len(parts) == 3
        img = cv2.imdecode(np.frombuffer(parts[0], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (120, 200, 3) and img[60, 20, 2] > 200 and img[60, 180, 0] > 200  # BGR: red, blue
        status, body, _ = get(server.url + "stats.json")
        assert status == 200 and b'"published"' in body


def test_a_frame_before_any_is_published_is_503():
    with LiveServer("127.0.0.1", 0) as server:
        assert get(server.url + "frame.jpg")[0] == 503
        assert get(server.url + "nothing")[0] == 404


def test_non_loopback_host_requires_the_token():
    with LiveServer("0.0.0.0", 0) as server, Publisher(server, red_left_blue_right()):
        token = server.token
        assert token and len(token) >= 20 and f"?token={token}" in server.url
        base = f"http://127.0.0.1:{server.port}"
        for path in ("/", "/stream.mjpg?frames=1", "/frame.jpg", "/stats.json"):
            assert get(base + path)[0] == 401, path
        assert get(base + "/frame.jpg?token=wrong")[0] == 401
        assert get(base + "/frame.jpg", {"Authorization": "Bearer nope"})[0] == 401
        status, body, _ = get(f"{base}/frame.jpg?token={token}")
        assert status == 200 and body[:2] == b"\xff\xd8"
        assert get(base + "/frame.jpg", {"X-Rig-Token": token})[0] == 200
        assert get(base + "/frame.jpg", {"Authorization": f"Bearer {token}"})[0] == 200
        status, page, _ = get(f"{base}/?token={token}")
        assert status == 200 and f"stream.mjpg?token={token}".encode() in page
        assert len(jpeg_parts(get(f"{base}/stream.mjpg?frames=2&token={token}")[1])) == 2


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("127.8.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("rig.local")


def chromium(tmp_path: Path, url: str, *mode: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--virtual-time-budget=3000", *mode, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_headless_chromium_shows_the_live_stream(tmp_path):
    """The token-protected page (server on all interfaces, opened through 127.0.0.1 with ?token=):
    the <img> receives stream frames (its load handler ran with the frame's size), the stats poll
    ran, and a screenshot shows the published image's colours."""
    import cv2

    with LiveServer("0.0.0.0", 0) as server, Publisher(server, red_left_blue_right()):
        r = chromium(tmp_path, server.url, "--dump-dom")
        assert r.returncode == 0, r.stderr[-500:]
        dom = r.stdout
        assert 'data-size="200x120"' in dom and 'data-frames="' in dom and 'data-frames="0"' not in dom
        assert "published" in dom and "waiting for frames" not in dom
        shot = tmp_path / "shot.png"
        r = chromium(tmp_path, server.url, f"--screenshot={shot}", "--window-size=400,300")
        assert r.returncode == 0 and shot.is_file(), r.stderr[-500:]
        img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
        b, g, rr = (img[..., i].astype(int) for i in range(3))
        assert ((rr > 180) & (g < 80) & (b < 80)).sum() > 1000  # the red half
        assert ((b > 180) & (g < 80) & (rr < 80)).sum() > 1000  # the blue half
        assert get(server.url.replace("?token=", "?token=x"))[0] == 401


def test_rig_live_serve_streams_the_live_view(tmp_path):
    """`rig live --serve` wiring: the viewer URL is printed and the stream delivers the composite view
    (input | depth) while the loop runs on the simulated rig."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import cv2

    from inference.export import export_model
    from inference.model import build_model
    from rig.core.config import load_rig_config
    from rig.live import LiveOptions, run_live

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = tmp_path / "lite.onnx"
    export_model(build_model("d3net-lite").eval(), model, height=54, width=80, dynamic=True, mc=False, check=False)
    cfg = load_rig_config("simulated", overrides={
        "dslr.sensor_px": [160, 108], "dslr.pixel_um": 30.0, "dslr.focal_mm": 9.0, "output.size_px": [80, 54],
        "simulated.latency_scale": 0.0})
    got: dict[str, object] = {}

    def on_line(line: str) -> None:
        if line.startswith("viewer: "):
            url = line.split()[1]

            def fetch() -> None:
                got["stream"] = get(url + "stream.mjpg?frames=1")

            got["thread"] = threading.Thread(target=fetch, daemon=True)
            got["thread"].start()  # type: ignore[attr-defined]

    run_live(cfg, LiveOptions(source="simulated", model=str(model), max_frames=12, save=tmp_path / "s", serve=True,
                              port=0, panel=False, drop=False), print_fn=on_line)
    got["thread"].join(10)  # type: ignore[attr-defined]
    status, body, _ = got["stream"]  # type: ignore[misc]
    parts = jpeg_parts(body)
    assert status == 200 and len(parts) == 1
    view = cv2.imdecode(np.frombuffer(parts[0], np.uint8), cv2.IMREAD_COLOR)
    assert view.shape == (54, 160, 3)  # input | depth side by side
