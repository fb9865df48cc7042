"""Shared pieces of the ingest-api browser tests (test_live_map.py,
test_tracking_page.py): the real `ingest-api` binary on a free port, a fleet
posting positions, a small tile server on a free loopback port, and headless
Chromium (Selenium + Debian's chromium-driver, no network needed) with its
network log.

Environment: INGEST_API_BIN (default target/debug/ingest-api), CHROMIUM
(default /usr/bin/chromium), CHROMEDRIVER (default /usr/bin/chromedriver),
INGEST_ASSETS_DIR (default services/ingest-api/web/node_modules, filled by
scripts/web-assets.sh).
"""

import http.server as http_server
import json
import math
import os
import re
import signal
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("INGEST_API_BIN", ROOT / "target" / "debug" / "ingest-api"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ASSETS_DIR = os.environ.get("INGEST_ASSETS_DIR", str(ROOT / "services" / "ingest-api" / "web" / "node_modules"))
ARTIFACTS = ROOT / "target" / "test-artifacts"
TIMEOUT = 60


def http(method, url, token=None, body=None, headers=None):
    """(status, body bytes, headers) of one request; never raises on HTTP errors."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read(), res.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def new_key(name):
    """(token, keys line) of a fresh key from `ingest-api keys create`."""
    out = subprocess.run([BIN, "keys", "create", name], check=True, capture_output=True, text=True).stdout
    token = re.search(r"^token:\s*(\S+)", out, re.M).group(1)
    line = re.search(r"^line:\s*(\S+)", out, re.M).group(1)
    return token, line


class IngestApi:
    """`ingest-api serve` on 127.0.0.1:0; the port comes from its log. With a
    courier-app key (`token`) and a dispatch key (`dispatch_token`)."""

    def __init__(self, data_dir, args=()):
        self.token, line = new_key("e2e-app")
        self.dispatch_token, dispatch_line = new_key("e2e-dispatch")
        env = dict(os.environ, RUST_LOG="debug,h2=info,hyper=info,redis=info", NO_COLOR="1",
                   INGEST_API_KEYS=line, INGEST_DISPATCH_API_KEYS=dispatch_line,
                   INGEST_ASSETS_DIR=ASSETS_DIR)
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
             "--linger-ms", "5", "--http-workers", "2", *args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.log = []
        port = threading.Event()
        self.port = None

        def read_log():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"ingest-api listening.*\bport=(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    port.set()
            port.set()

        self.reader = threading.Thread(target=read_log, daemon=True)
        self.reader.start()
        if not port.wait(30) or self.port is None:
            self.stop()
            raise RuntimeError("ingest-api did not start:\n" + "".join(self.log))
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while http("GET", f"{self.base}/readyz")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("ingest-api not ready:\n" + "".join(self.log))
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)
        self.proc.stderr.close()


def rfc3339_now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


PARKED = "courier-parked"
PARKED_AT = (-23.5614, -46.6559)   # Avenida Paulista


class Fleet(threading.Thread):
    """`couriers` couriers riding circles around central São Paulo, and one
    parked (PARKED, same place, 3.5 m/s reported), one batch every 200 ms."""

    def __init__(self, service, couriers):
        super().__init__(daemon=True)
        self.service = service
        self.couriers = couriers
        self.stop_event = threading.Event()
        self.posted = 0
        self.errors = []

    def run(self):
        step = 0
        while not self.stop_event.is_set():
            now = rfc3339_now()
            positions = []
            for i in range(self.couriers):
                centre_lat = -23.62 + 0.09 * ((i * 7) % self.couriers) / self.couriers
                centre_lon = -46.72 + 0.14 * ((i * 5) % self.couriers) / self.couriers
                angle = step * 0.15 + i
                positions.append({
                    "event_id": str(uuid.uuid4()),
                    "courier_id": f"courier-{i:02d}",
                    "lat": round(centre_lat + 0.012 * math.sin(angle), 6),
                    "lon": round(centre_lon + 0.012 * math.cos(angle), 6),
                    "recorded_at": now,
                    "speed_mps": round(4 + i % 5, 1),
                    "heading_deg": round(math.degrees(angle + math.pi / 2) % 360, 1),
                })
            positions.append({
                "event_id": str(uuid.uuid4()), "courier_id": PARKED,
                "lat": PARKED_AT[0], "lon": PARKED_AT[1], "recorded_at": now, "speed_mps": 3.5,
            })
            status, body, _ = http("POST", f"{self.service.base}/v1/positions",
                                   self.service.token, {"positions": positions})
            if status == 202:
                self.posted += len(positions)
            else:
                self.errors.append((status, body[:200]))
            step += 1
            self.stop_event.wait(0.2)

    def halt(self):
        self.stop_event.set()
        if self.is_alive():
            self.join(10)


def png(width, height, rgb):
    """A one-colour RGB PNG."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


class TileServer:
    """An OpenStreetMap-style tile server on a free loopback port: every
    /{z}/{x}/{y}.png is a light 256 px tile; it records the paths asked."""

    TILE = png(256, 256, (222, 232, 214))

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(http_server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                if re.fullmatch(r"/\d+/\d+/\d+\.png", self.path):
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(outer.TILE)))
                    self.end_headers()
                    self.wfile.write(outer.TILE)
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        self.server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.template = self.origin + "/{z}/{x}/{y}.png"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def chromium(user_data_dir):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}",
                "--window-size=1280,860"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def requested_urls(driver, seen):
    """Appends to `seen` every URL the browser asked for since the last call
    (Network.requestWillBeSent of the performance log) and returns `seen`."""
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            seen.append(message["params"]["request"]["url"])
    return seen


def hosts(urls):
    """The scheme://host:port of every http(s) URL."""
    return {f"{u.scheme}://{u.netloc}" for u in map(urlsplit, urls) if u.scheme in ("http", "https")}


def csp_sources(csp, directive):
    for part in csp.split(";"):
        words = part.split()
        if words and words[0] == directive:
            return words[1:]
    return None
