"""The live map (GET /map) in a real browser.

Starts the real `ingest-api` binary on a free port with a fresh data directory
and keys, posts positions of a small fleet moving around central São Paulo
(and one parked courier), opens `/map#token=...` in headless Chromium and
checks, in both renderers of the page:
- the offline grid (no tile source, the default): couriers drawn on the
  canvas, markers move as positions are posted, the hover card names the
  courier with its speed and position age, nothing is requested from any
  other host;
- Leaflet over tiles (map_tile_url pointing at a tile server of the test's
  own on a free loopback port): the Leaflet object exists and came from the
  service (/assets/leaflet/), tiles are requested from that server and from
  no other host, the CSP names exactly that host for img-src, markers move,
  the hover card.
Screenshots go to target/test-artifacts/live-map*.png.

Run by scripts/test-browser.sh (see ingest_support.py for the environment).
"""

import sys
import tempfile
import unittest

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ingest_support import (ARTIFACTS, PARKED, ROOT, TIMEOUT, Fleet, IngestApi, TileServer, chromium,
                            csp_sources, hosts, http, requested_urls)

COURIERS = 12


def wait(driver, cond, timeout=TIMEOUT):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(cond)


def count(driver, id_):
    return int(driver.find_element(By.ID, id_).text or "0")


def last_point(driver, courier):
    return driver.execute_script(
        "const c = window.courierMap.couriers.get(arguments[0]);"
        "if (!c) return null; const p = c.trail[c.trail.length - 1]; return [p.lat, p.lon];", courier)


class LiveMapTest(unittest.TestCase):
    def run_map(self, tiles=None):
        """Starts the service (with `tiles`, a TileServer, or none), a fleet
        and a browser on /map; yields them to the checks, then stops all."""
        data_dir = tempfile.TemporaryDirectory()
        profile = tempfile.TemporaryDirectory()
        args = ["--map-tile-url", tiles.template] if tiles else []
        service = IngestApi(data_dir.name, args)
        fleet = Fleet(service, COURIERS)
        driver = None

        def cleanup():
            fleet.halt()
            if driver is not None:
                driver.quit()
            service.stop()
            data_dir.cleanup()
            profile.cleanup()
            # The keys never reached a log line.
            log = "".join(service.log)
            self.assertNotIn(service.token, log)
            self.assertFalse(fleet.errors, fleet.errors[:3])

        self.addCleanup(cleanup)
        # Without a key the stream is refused; the page itself needs none.
        self.assertEqual(http("GET", f"{service.base}/v1/positions/stream")[0], 401)
        fleet.start()
        driver = chromium(profile.name)
        driver.get(f"{service.base}/map#token={service.token}")
        # The whole fleet and a few trail points (conditions, never sleeps).
        wait(driver, lambda d: count(d, "courier-count") >= COURIERS + 1
             and count(d, "event-count") >= 5 * (COURIERS + 1))
        self.assertEqual(count(driver, "courier-count"), COURIERS + 1)
        self.assertEqual(driver.find_element(By.ID, "status").text, "live")
        # The key left the address bar.
        self.assertNotIn(service.token, driver.current_url)
        return service, fleet, driver

    def check_markers_move(self, driver):
        before = last_point(driver, "courier-00")
        screen_before = driver.execute_script("return window.courierMap.screenPoint('courier-00')")
        wait(driver, lambda d: last_point(d, "courier-00") != before)
        wait(driver, lambda d: d.execute_script(
            "return window.courierMap.screenPoint('courier-00')") != screen_before)
        trail = driver.execute_script("return window.courierMap.couriers.get('courier-00').trail.length")
        self.assertGreater(trail, 1)
        self.assertLessEqual(trail, 12)

    def check_hover_card(self, driver, element, x, y):
        """Moves the pointer to (x, y) of `element` (offsets from its centre)
        and waits for the card of the parked courier."""
        ActionChains(driver).move_to_element_with_offset(element, x, y).perform()
        card = driver.find_element(By.ID, "hover-card")
        wait(driver, lambda d: card.is_displayed() and PARKED in card.text)
        text = card.text
        self.assertIn("speed 12.6 km/h", text)     # 3.5 m/s
        self.assertRegex(text, r"position \d+ s ago")
        self.assertIn("-23.56140, -46.65590", text)
        return text

    def test_the_grid_draws_the_couriers_being_posted(self):
        service, fleet, driver = self.run_map()
        self.assertEqual(driver.execute_script("return window.courierMap.mode"), "grid")
        self.assertFalse(driver.execute_script("return typeof window.L !== 'undefined'"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "live-map.png"
        self.assertTrue(driver.save_screenshot(str(shot)))
        # The canvas has courier-coloured pixels (not just the background).
        coloured = driver.execute_script("""
            const c = document.querySelector('#map canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
              const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
              if (Math.max(r, g, b) - Math.min(r, g, b) > 60) n++;
            }
            return n;""")
        self.assertGreater(coloured, 100)
        self.check_markers_move(driver)
        canvas = driver.find_element(By.CSS_SELECTOR, "#map canvas")
        rect = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", canvas)
        main = driver.execute_script(
            "return document.getElementById('map').getBoundingClientRect().toJSON()")
        p = driver.execute_script(f"return window.courierMap.screenPoint('{PARKED}')")
        # screenPoint is relative to #map; the offset is from the canvas centre.
        x = p["x"] + main["left"] - rect["left"] - rect["width"] / 2
        y = p["y"] + main["top"] - rect["top"] - rect["height"] / 2
        text = self.check_hover_card(driver, canvas, round(x), round(y))
        urls = requested_urls(driver, [])
        self.assertEqual(hosts(urls), {service.base}, urls)
        print(f"live map (grid): {count(driver, 'courier-count')} couriers, "
              f"{count(driver, 'event-count')} events, {fleet.posted} positions posted; "
              f"hover card {text!r}; screenshot {shot.relative_to(ROOT)}")

    def test_leaflet_over_the_configured_tiles(self):
        tiles = TileServer()
        self.addCleanup(tiles.stop)
        service, fleet, driver = self.run_map(tiles)
        # The CSP allows exactly the tile host for images, nothing else external.
        status, _, headers = http("GET", f"{service.base}/map")
        self.assertEqual(status, 200)
        csp = headers["Content-Security-Policy"]
        self.assertEqual(csp_sources(csp, "img-src"), ["'self'", "data:", tiles.origin])
        external = [w for w in csp.replace(";", " ").split() if "://" in w or w.startswith("*")]
        self.assertEqual(external, [tiles.origin], csp)
        # Leaflet runs, from this service.
        self.assertEqual(driver.execute_script("return window.courierMap.mode"), "leaflet")
        self.assertEqual(driver.execute_script("return typeof L === 'object' && L.version"), "1.9.4")
        wait(driver, lambda d: len(tiles.requests) > 0)
        wait(driver, lambda d: d.execute_script(
            "return [...document.querySelectorAll('img.leaflet-tile')].some(i => i.complete && i.naturalWidth === 256)"))
        self.assertEqual(len(driver.find_elements(By.CSS_SELECTOR, ".cm-marker[data-courier]")), COURIERS + 1)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "live-map-leaflet.png"
        self.assertTrue(driver.save_screenshot(str(shot)))
        self.check_markers_move(driver)
        marker = driver.find_element(By.CSS_SELECTOR, f".cm-marker[data-courier='{PARKED}']")
        text = self.check_hover_card(driver, marker, 0, 0)
        urls = requested_urls(driver, [])
        self.assertIn(f"{service.base}/assets/leaflet/leaflet.js", urls)
        self.assertIn(f"{service.base}/assets/leaflet/leaflet.css", urls)
        self.assertEqual(hosts(urls), {service.base, tiles.origin}, urls)
        self.assertTrue(all(p.endswith(".png") for p in tiles.requests), tiles.requests[:5])
        # The assets have their content types and cache headers.
        status, body, headers = http("GET", f"{service.base}/assets/leaflet/leaflet.js")
        self.assertEqual((status, headers["Content-Type"]), (200, "text/javascript; charset=utf-8"))
        self.assertEqual(headers["Cache-Control"], "public, max-age=86400")
        status, _, _ = http("GET", f"{service.base}/assets/leaflet/leaflet.js",
                            headers={"If-None-Match": headers["ETag"]})
        self.assertEqual(status, 304)
        self.assertEqual(http("GET", f"{service.base}/assets/leaflet/../../package.json")[0], 404)
        print(f"live map (leaflet): {count(driver, 'courier-count')} couriers, {len(tiles.requests)} tiles "
              f"from {tiles.origin}; hover card {text!r}; screenshot {shot.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False, verbosity=2).result.wasSuccessful() else 1)
