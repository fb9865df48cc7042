"""The live map in a real browser.

Starts the real `ingest-api` binary on a free port with a fresh data directory
and key, posts positions of a small fleet moving around central São Paulo,
opens `/map#token=...` in headless Chromium (Selenium + Debian's
chromium-driver, no network needed), waits until couriers are drawn, saves a
screenshot to target/test-artifacts/live-map.png and checks the counters.

Run by scripts/test-browser.sh. Environment: INGEST_API_BIN (default
target/debug/ingest-api), CHROMIUM (default /usr/bin/chromium), CHROMEDRIVER
(default /usr/bin/chromedriver).
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("INGEST_API_BIN", ROOT / "target" / "debug" / "ingest-api"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT = ROOT / "target" / "test-artifacts" / "live-map.png"
COURIERS = 12
TIMEOUT = 60


def http(method, url, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class IngestApi:
    """`ingest-api serve` on 127.0.0.1:0; the port comes from its log."""

    def __init__(self, data_dir):
        out = subprocess.run(
            [BIN, "keys", "create", "e2e-live-map"], check=True, capture_output=True, text=True
        ).stdout
        self.token = re.search(r"^token:\s*(\S+)", out, re.M).group(1)
        line = re.search(r"^line:\s*(\S+)", out, re.M).group(1)
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1", INGEST_API_KEYS=line)
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
             "--linger-ms", "5", "--http-workers", "2"],
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


class Fleet(threading.Thread):
    """Couriers riding circles around central São Paulo, one batch every 200 ms."""

    def __init__(self, service):
        super().__init__(daemon=True)
        self.service = service
        self.stop_event = threading.Event()
        self.posted = 0
        self.errors = []

    def run(self):
        step = 0
        while not self.stop_event.is_set():
            now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            positions = []
            for i in range(COURIERS):
                centre_lat = -23.62 + 0.09 * ((i * 7) % COURIERS) / COURIERS
                centre_lon = -46.72 + 0.14 * ((i * 5) % COURIERS) / COURIERS
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
            status, body = http("POST", f"{self.service.base}/v1/positions",
                                self.service.token, {"positions": positions})
            if status == 202:
                self.posted += len(positions)
            else:
                self.errors.append((status, body[:200]))
            step += 1
            self.stop_event.wait(0.2)


def chromium(user_data_dir):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}",
                "--window-size=1280,860"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


class LiveMapTest(unittest.TestCase):
    def test_the_map_draws_the_couriers_being_posted(self):
        with tempfile.TemporaryDirectory() as data_dir, \
                tempfile.TemporaryDirectory() as profile:
            service = IngestApi(data_dir)
            fleet = Fleet(service)
            driver = None
            try:
                # Without a key the stream is refused; the page itself needs none.
                self.assertEqual(http("GET", f"{service.base}/v1/positions/stream")[0], 401)
                self.assertEqual(http("GET", f"{service.base}/map")[0], 200)
                fleet.start()
                driver = chromium(profile)
                driver.get(f"{service.base}/map#token={service.token}")
                count = lambda d, id_: int(d.find_element(By.ID, id_).text or "0")
                WebDriverWait(driver, TIMEOUT, poll_frequency=0.1).until(
                    lambda d: count(d, "courier-count") > 0)
                # Let the whole fleet and a few trail points arrive (a condition, not a sleep).
                WebDriverWait(driver, TIMEOUT, poll_frequency=0.1).until(
                    lambda d: count(d, "courier-count") >= COURIERS
                    and count(d, "event-count") >= 5 * COURIERS)
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                self.assertTrue(driver.save_screenshot(str(SCREENSHOT)))

                couriers = count(driver, "courier-count")
                events = count(driver, "event-count")
                self.assertEqual(couriers, COURIERS)
                self.assertGreaterEqual(events, 5 * COURIERS)
                self.assertEqual(driver.find_element(By.ID, "status").text, "live")
                # The key left the address bar, and the server never saw or logged it.
                self.assertNotIn(service.token, driver.current_url)
                # The canvas has courier-coloured pixels (not just the background).
                coloured = driver.execute_script("""
                    const c = document.getElementById('map');
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0;
                    for (let i = 0; i < d.length; i += 4) {
                      const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
                      if (Math.max(r, g, b) - Math.min(r, g, b) > 60) n++;
                    }
                    return n;""")
                self.assertGreater(coloured, 100)
                self.assertFalse(fleet.errors, fleet.errors[:3])
                print(f"live map: {couriers} couriers drawn, {events} events received, "
                      f"{fleet.posted} positions posted; screenshot {SCREENSHOT.relative_to(ROOT)}")
            finally:
                fleet.stop_event.set()
                if fleet.is_alive():
                    fleet.join(10)
                if driver is not None:
                    driver.quit()
                service.stop()
            self.assertNotIn(service.token, "".join(service.log))


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False, verbosity=2).result.wasSuccessful() else 1)
