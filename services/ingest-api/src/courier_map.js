// courier-map.js: the map of the live map page (/map) and of the customer
// tracking page (/track), served by ingest-api at /assets/courier-map.js.
//
// Two renderers behind one interface:
// - "leaflet": Leaflet (served by this service under /assets/leaflet/, never
//   from a CDN) over the tile source the service was configured with
//   (map_tile_url); the page's CSP allows that tile host and no other.
// - "grid": no tile source (the default, offline): couriers on a lat/lon grid
//   drawn on a canvas, with a scale bar.
// Both draw a short trail per courier (its last trailPoints positions, fading
// with age) and a hover card with the courier id, speed and position age.
//
//   const map = CourierMap.create(container, {config, bbox, follow, trailPoints});
//   map.update({courier_id, lat, lon, speed_mps, recorded_at});
//   map.clear();
"use strict";
(function () {
  const M_PER_DEG_LAT = 111320;
  const TRAIL_SECONDS = 60;

  // Hues a golden angle apart, in order of first appearance: neighbours differ.
  function color(n) {
    return `hsl(${(n * 137.508) % 360}, 72%, 42%)`;
  }

  function niceDistance(m) {
    const p = Math.pow(10, Math.floor(Math.log10(m)));
    for (const f of [5, 2, 1]) if (f * p <= m) return f * p;
    return p;
  }

  function ageText(recordedAt) {
    if (!recordedAt) return "unknown";
    const secs = Math.max(0, (Date.now() - Date.parse(recordedAt)) / 1000);
    if (!Number.isFinite(secs)) return "unknown";
    if (secs < 90) return `${Math.round(secs)} s ago`;
    if (secs < 5400) return `${Math.round(secs / 60)} min ago`;
    return `${Math.round(secs / 3600)} h ago`;
  }

  function speedText(mps) {
    return Number.isFinite(mps) ? `${(mps * 3.6).toFixed(1)} km/h` : "unknown";
  }

  /** The page's map settings, from <script id="map-config" type="application/json">. */
  function readConfig() {
    const el = document.getElementById("map-config");
    try { return el ? JSON.parse(el.textContent) : {}; } catch (e) { return {}; }
  }

  function create(container, options) {
    const opts = Object.assign({ trailPoints: 12, follow: false, bbox: null, label: null }, options || {});
    const config = opts.config || readConfig();
    const couriers = new Map();   // id -> {id, color, trail: [{lat, lon, t}], speed, recordedAt, ...}
    let hovered = null;

    // ---- the hover card, shared by both renderers
    const card = document.createElement("div");
    card.id = "hover-card";
    card.className = "cm-card";
    card.hidden = true;
    card.setAttribute("role", "status");
    container.appendChild(card);
    function renderCard() {
      const c = hovered && couriers.get(hovered);
      if (!c) { card.hidden = true; return; }
      const last = c.trail[c.trail.length - 1];
      card.textContent = "";
      const title = document.createElement("b");
      title.textContent = opts.label ? opts.label(c.id) : c.id;
      card.append(title,
        document.createElement("br"), `speed ${speedText(c.speed)}`,
        document.createElement("br"), `position ${ageText(c.recordedAt)}`,
        document.createElement("br"), `${last.lat.toFixed(5)}, ${last.lon.toFixed(5)}`);
      card.hidden = false;
    }
    function hover(id, x, y) {
      hovered = id;
      if (id) {
        card.style.left = `${Math.round(x + 14)}px`;
        card.style.top = `${Math.round(y + 14)}px`;
      }
      renderCard();
    }
    setInterval(() => { if (hovered) renderCard(); }, 1000);

    const renderer = (config.tileUrl && window.L)
      ? leafletRenderer(container, config, opts, couriers, hover)
      : gridRenderer(container, opts, couriers, hover);

    return {
      mode: renderer.mode,
      couriers,
      size: () => couriers.size,
      update(p) {
        if (typeof p.courier_id !== "string" || !Number.isFinite(p.lat) || !Number.isFinite(p.lon)) return;
        let c = couriers.get(p.courier_id);
        if (!c) {
          c = { id: p.courier_id, color: color(couriers.size), trail: [] };
          couriers.set(p.courier_id, c);
        }
        c.trail.push({ lat: p.lat, lon: p.lon, t: performance.now() });
        if (c.trail.length > opts.trailPoints) c.trail.shift();
        c.speed = p.speed_mps;
        c.recordedAt = p.recorded_at;
        renderer.update(c);
        if (hovered === c.id) renderCard();
      },
      clear() {
        for (const c of couriers.values()) renderer.remove(c);
        couriers.clear();
        hover(null);
      },
      /** Where a courier is drawn, in CSS pixels from the container's top left. */
      screenPoint: (id) => {
        const c = couriers.get(id);
        return c ? renderer.point(c) : null;
      },
      renderer,
    };
  }

  // ---- Leaflet over the configured tiles
  function leafletRenderer(container, config, opts, couriers, hover) {
    const L = window.L;
    const el = document.createElement("div");
    el.className = "cm-leaflet";
    container.prepend(el);
    const map = L.map(el, { zoomControl: true, attributionControl: true, preferCanvas: false });
    const attribution = document.createElement("span");
    attribution.textContent = config.attribution || "";        // text, never HTML
    L.tileLayer(config.tileUrl, {
      maxZoom: config.maxZoom || 19,
      attribution: attribution.innerHTML,
    }).addTo(map);
    const b = opts.bbox || [-23.65, -46.75, -23.50, -46.55];
    map.fitBounds([[b[0], b[1]], [b[2], b[3]]]);
    new ResizeObserver(() => map.invalidateSize()).observe(el);
    let followed = false;

    function hoverFrom(c, ev) {
      const r = container.getBoundingClientRect();
      hover(c.id, ev.originalEvent.clientX - r.left, ev.originalEvent.clientY - r.top);
    }

    return {
      mode: "leaflet",
      map,
      update(c) {
        const last = c.trail[c.trail.length - 1];
        const latlngs = c.trail.map((p) => [p.lat, p.lon]);
        if (!c.marker) {
          const icon = L.divIcon({
            className: "cm-marker",
            html: `<span style="background:${c.color}"></span>`,
            iconSize: [14, 14],
          });
          c.line = L.polyline(latlngs, { color: c.color, weight: 3, opacity: 0.55, interactive: false }).addTo(map);
          c.marker = L.marker([last.lat, last.lon], { icon, keyboard: false, title: "" }).addTo(map);
          c.marker.getElement().dataset.courier = c.id;
          c.marker.on("mouseover", (ev) => hoverFrom(c, ev));
          c.marker.on("mousemove", (ev) => hoverFrom(c, ev));
          c.marker.on("mouseout", () => hover(null));
        } else {
          c.marker.setLatLng([last.lat, last.lon]);
          c.line.setLatLngs(latlngs);
        }
        if (opts.follow) {
          if (!followed) { map.setView([last.lat, last.lon], 16); followed = true; }
          else if (!map.getBounds().pad(-0.1).contains([last.lat, last.lon])) map.panTo([last.lat, last.lon]);
        }
      },
      remove(c) {
        if (c.marker) c.marker.remove();
        if (c.line) c.line.remove();
        followed = false;
      },
      point(c) {
        const last = c.trail[c.trail.length - 1];
        const p = map.latLngToContainerPoint([last.lat, last.lon]);
        return { x: p.x, y: p.y };
      },
    };
  }

  // ---- the offline grid on a canvas
  function gridRenderer(container, opts, couriers, hover) {
    const canvas = document.createElement("canvas");
    canvas.id = "map-canvas";
    canvas.setAttribute("aria-label", "Courier positions");
    container.prepend(canvas);
    const ctx = canvas.getContext("2d");
    const bbox = (opts.bbox || [-23.65, -46.75, -23.50, -46.55]).slice();
    let dirty = true, fitted = false;

    function include(lat, lon) {
      const margin = 0.01;
      if (opts.follow && !fitted) {
        // One courier: a box of about 1.5 km around its first position.
        bbox.splice(0, 4, lat - 0.007, lon - 0.007, lat + 0.007, lon + 0.007);
        fitted = true;
      }
      if (lat < bbox[0]) bbox[0] = Math.max(-90, lat - margin);
      if (lat > bbox[2]) bbox[2] = Math.min(90, lat + margin);
      if (lon < bbox[1]) bbox[1] = Math.max(-180, lon - margin);
      if (lon > bbox[3]) bbox[3] = Math.min(180, lon + margin);
    }

    // equirectangular scaled by cos(mid latitude), fitted and centred
    function view() {
      const w = canvas.width / (window.devicePixelRatio || 1);
      const h = canvas.height / (window.devicePixelRatio || 1);
      const midLat = (bbox[0] + bbox[2]) / 2;
      const kx = Math.cos(midLat * Math.PI / 180);
      const spanX = (bbox[3] - bbox[1]) * kx, spanY = bbox[2] - bbox[0];
      const pad = 24;
      const scale = Math.min((w - 2 * pad) / spanX, (h - 2 * pad) / spanY);
      const ox = (w - spanX * scale) / 2, oy = (h - spanY * scale) / 2;
      return {
        w, h, scale,
        x: (lon) => ox + (lon - bbox[1]) * kx * scale,
        y: (lat) => oy + (bbox[2] - lat) * scale,
        box: [ox, oy, spanX * scale, spanY * scale],
      };
    }

    function resize() {
      const r = canvas.getBoundingClientRect();
      const dpr = window.devicePixelRatio || 1;
      canvas.width = Math.max(1, Math.round(r.width * dpr));
      canvas.height = Math.max(1, Math.round(r.height * dpr));
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      dirty = true;
    }

    function draw() {
      const v = view();
      const now = performance.now();
      ctx.clearRect(0, 0, v.w, v.h);
      ctx.fillStyle = "#f8f9fa";
      ctx.fillRect(...v.box);
      ctx.strokeStyle = "#b8c0c8";
      ctx.lineWidth = 1;
      ctx.strokeRect(...v.box);

      const step = niceDistance((bbox[2] - bbox[0]) / 4) || 0.01;
      ctx.strokeStyle = "#dde2e7";
      ctx.fillStyle = "#7a8590";
      ctx.font = "11px system-ui, sans-serif";
      ctx.beginPath();
      for (let lat = Math.ceil(bbox[0] / step) * step; lat <= bbox[2]; lat += step) {
        const y = v.y(lat);
        ctx.moveTo(v.box[0], y); ctx.lineTo(v.box[0] + v.box[2], y);
        if (y - 3 > v.box[1] + 36) ctx.fillText(lat.toFixed(3), v.box[0] + 4, y - 3);
      }
      for (let lon = Math.ceil(bbox[1] / step) * step; lon <= bbox[3]; lon += step) {
        const x = v.x(lon);
        ctx.moveTo(x, v.box[1]); ctx.lineTo(x, v.box[1] + v.box[3]);
        ctx.fillText(lon.toFixed(3), x + 3, v.box[1] + v.box[3] - 4);
      }
      ctx.stroke();

      for (const [id, c] of couriers) {
        const pts = c.trail;
        ctx.strokeStyle = c.color;
        ctx.lineWidth = 2;
        for (let i = 1; i < pts.length; i++) {
          const age = (now - pts[i].t) / 1000;
          const alpha = (i / pts.length) * Math.max(0, 1 - age / TRAIL_SECONDS);
          if (alpha <= 0.02) continue;
          ctx.globalAlpha = alpha;
          ctx.beginPath();
          ctx.moveTo(v.x(pts[i - 1].lon), v.y(pts[i - 1].lat));
          ctx.lineTo(v.x(pts[i].lon), v.y(pts[i].lat));
          ctx.stroke();
        }
        ctx.globalAlpha = 1;
        const last = pts[pts.length - 1];
        const x = v.x(last.lon), y = v.y(last.lat);
        ctx.beginPath();
        ctx.arc(x, y, 5, 0, 2 * Math.PI);
        ctx.fillStyle = c.color;
        ctx.fill();
        ctx.lineWidth = 1.5;
        ctx.strokeStyle = "#fff";
        ctx.stroke();
        if (couriers.size <= 40) {
          ctx.fillStyle = "#1d2733";
          ctx.fillText(opts.label ? opts.label(id) : id, x + 7, y - 6);
        }
      }

      // scale bar: a round distance about a fifth of the width
      const mPerPx = M_PER_DEG_LAT / v.scale;
      const meters = niceDistance(mPerPx * v.w / 5);
      const len = meters / mPerPx;
      const bx = v.box[0] + 12, by = v.box[1] + 18;
      ctx.fillStyle = "rgba(255,255,255,.85)";
      ctx.fillRect(bx - 6, by - 14, len + 12, 24);
      ctx.strokeStyle = "#1d2733";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(bx, by - 4); ctx.lineTo(bx, by + 4); ctx.lineTo(bx + len, by + 4); ctx.lineTo(bx + len, by - 4);
      ctx.stroke();
      ctx.fillStyle = "#1d2733";
      ctx.fillText(meters >= 1000 ? `${meters / 1000} km` : `${meters} m`, bx + 4, by - 2);
    }

    function point(c) {
      const v = view();
      const last = c.trail[c.trail.length - 1];
      const r = canvas.getBoundingClientRect(), cr = container.getBoundingClientRect();
      return { x: v.x(last.lon) + r.left - cr.left, y: v.y(last.lat) + r.top - cr.top };
    }

    // Hover: the courier drawn nearest the pointer, within 12 px.
    canvas.addEventListener("mousemove", (ev) => {
      const cr = container.getBoundingClientRect();
      const mx = ev.clientX - cr.left, my = ev.clientY - cr.top;
      let best = null, bestD = 144;
      for (const c of couriers.values()) {
        const p = point(c);
        const d = (p.x - mx) ** 2 + (p.y - my) ** 2;
        if (d <= bestD) { best = c.id; bestD = d; }
      }
      hover(best, mx, my);
    });
    canvas.addEventListener("mouseleave", () => hover(null));

    function frame() {
      if (dirty) { dirty = false; draw(); }
      requestAnimationFrame(frame);
    }
    new ResizeObserver(resize).observe(canvas);   // also when a hidden map is shown
    resize();
    requestAnimationFrame(frame);
    setInterval(() => { dirty = true; }, 1000);   // trails fade with time

    return {
      mode: "grid",
      update(c) {
        const last = c.trail[c.trail.length - 1];
        include(last.lat, last.lon);
        dirty = true;
      },
      remove() { fitted = false; dirty = true; },
      point,
    };
  }

  window.CourierMap = { create, readConfig };
})();
