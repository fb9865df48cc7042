"""The customer tracking page in a real browser.

Starts the real `ingest-api` binary with a courier-app key, a dispatch key
and a tile source of the test's own (a tile server on a free loopback port),
posts positions of a small fleet, creates with the dispatch key a tracking
link for one order carried by one courier, opens the link's page in headless
Chromium and checks that it shows that courier, and only that courier, on
the Leaflet map during the order (hover card, nothing from any other host,
the token never in a request path, a log line or the CSP), and nothing at all
once the link is revoked.

Run by scripts/test-browser.sh (see ingest_support.py for the environment).
"""

import sys
import tempfile
import unittest
from datetime import datetime, timedelta, timezone

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ingest_support import (ARTIFACTS, ROOT, TIMEOUT, Fleet, IngestApi, TileServer, chromium, hosts, http,
                            requested_urls)

COURIERS = 6
TRACKED = "courier-03"


def wait(driver, cond, timeout=TIMEOUT):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(cond)


class TrackingPageTest(unittest.TestCase):
    def test_the_page_shows_its_courier_during_the_order_and_nothing_after_revocation(self):
        tiles = TileServer()
        data_dir = tempfile.TemporaryDirectory()
        profile = tempfile.TemporaryDirectory()
        service = IngestApi(data_dir.name, ["--map-tile-url", tiles.template])
        fleet = Fleet(service, COURIERS)
        driver = None
        token = None
        try:
            fleet.start()
            # The tracked courier has a latest position before the link is opened.
            wait(None, lambda _: http("GET", f"{service.base}/v1/couriers/{TRACKED}/position",
                                      service.token)[0] == 200)
            expires = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
            link = {"order_id": "order-e2e-1", "courier_id": TRACKED, "expires_at": expires}
            # A courier-app key cannot create a link; a dispatch key can.
            self.assertEqual(http("POST", f"{service.base}/v1/tracking-links", service.token, link)[0], 401)
            status, body, _ = http("POST", f"{service.base}/v1/tracking-links", service.dispatch_token, link)
            self.assertEqual(status, 201, body)
            created = __import__("json").loads(body)
            token = created["token"]

            driver = chromium(profile.name)
            driver.get(service.base + created["url"])
            wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "tracking")
            self.assertEqual(driver.execute_script("return window.courierMap.mode"), "leaflet")
            self.assertEqual(driver.execute_script("return typeof L === 'object' && L.version"), "1.9.4")
            self.assertEqual(driver.find_element(By.ID, "order").text, "order-e2e-1")
            # One courier on the map: the one of the link, where the service says it is.
            markers = driver.find_elements(By.CSS_SELECTOR, ".cm-marker")
            self.assertEqual(len(markers), 1)
            self.assertEqual(driver.execute_script("return window.courierMap.size()"), 1)
            shown = driver.execute_script(
                "const c = [...window.courierMap.couriers.values()][0]; const p = c.trail[c.trail.length - 1];"
                "return [p.lat, p.lon];")
            _, latest, _ = http("GET", f"{service.base}/v1/couriers/{TRACKED}/position", service.token)
            latest = __import__("json").loads(latest)
            # The fleet keeps moving: the page's point is one of the tracked courier's circle.
            centre_lat = -23.62 + 0.09 * ((3 * 7) % COURIERS) / COURIERS
            centre_lon = -46.72 + 0.14 * ((3 * 5) % COURIERS) / COURIERS
            radius = ((shown[0] - centre_lat) ** 2 + (shown[1] - centre_lon) ** 2) ** 0.5
            self.assertAlmostEqual(radius, 0.012, delta=0.0005)
            self.assertNotIn(latest["courier_id"], driver.find_element(By.TAG_NAME, "body").text)
            wait(driver, lambda d: len(tiles.requests) > 0)
            # The hover card names no courier id, only "Your courier".
            ActionChains(driver).move_to_element(markers[0]).perform()
            card = driver.find_element(By.ID, "hover-card")
            wait(driver, lambda d: card.is_displayed() and "Your courier" in card.text)
            self.assertIn("km/h", card.text)
            self.assertNotIn(TRACKED, card.text)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "tracking-page.png"
            self.assertTrue(driver.save_screenshot(str(shot)))
            # The marker follows the courier (the map pans with it).
            where = ("const m = window.courierMap.couriers.get('courier').marker.getLatLng();"
                     "return [m.lat, m.lng];")
            before = driver.execute_script(where)
            wait(driver, lambda d: d.execute_script(where) != before)

            # Revoked: the page shows nothing of the courier any more.
            status, _, _ = http("DELETE", f"{service.base}/v1/tracking-links/{created['link_id']}",
                                service.dispatch_token)
            self.assertEqual(status, 204)
            wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "gone")
            self.assertEqual(driver.execute_script("return window.courierMap.size()"), 0)
            self.assertEqual(driver.find_elements(By.CSS_SELECTOR, ".cm-marker"), [])
            self.assertFalse(driver.find_element(By.ID, "map").is_displayed())
            self.assertFalse(driver.find_element(By.ID, "details").is_displayed())
            self.assertIn("not active", driver.find_element(By.ID, "status").text)

            urls = requested_urls(driver, [])
            self.assertEqual(hosts(urls), {service.base, tiles.origin}, urls)
            self.assertIn(f"{service.base}/assets/leaflet/leaflet.js", urls)
            print(f"tracking page: {TRACKED} shown on the Leaflet map, then nothing after revocation; "
                  f"{len(tiles.requests)} tiles; screenshot {shot.relative_to(ROOT)}")
        finally:
            fleet.halt()
            if driver is not None:
                driver.quit()
            service.stop()
            tiles.stop()
            data_dir.cleanup()
            profile.cleanup()
        self.assertFalse(fleet.errors, fleet.errors[:3])
        log = "".join(service.log)
        self.assertNotIn(service.dispatch_token, log)
        if token:
            self.assertNotIn(token, log)


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False, verbosity=2).result.wasSuccessful() else 1)
