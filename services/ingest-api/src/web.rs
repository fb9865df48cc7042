//! The browser side: the live map and tracking pages with their map settings
//! and content security policies, and the static assets the service serves
//! itself under `/assets/` (never from a CDN).
//!
//! Leaflet comes from npm at build time (`scripts/web-assets.sh`: `npm ci
//! --ignore-scripts` into `services/ingest-api/web/node_modules`, pinned by
//! the committed `package-lock.json`) and is read at startup from
//! `assets_dir`, so `cargo build` needs neither node nor the files. Pages use
//! it only when a tile source (`map_tile_url`) is configured; without one
//! (the default, offline) they draw couriers on a lat/lon grid.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::Settings;

/// The map script shared by both pages, compiled into the binary.
pub const COURIER_MAP_JS: &str = include_str!("courier_map.js");

/// The map page template, compiled into the binary.
pub const MAP_HTML: &str = include_str!("live_map.html");

/// The customer tracking page template, compiled into the binary.
pub const TRACK_HTML: &str = include_str!("track.html");

/// Where in a page template the map's head elements go.
const HEAD_MARK: &str = "<!--MAP_HEAD-->";

/// The Leaflet files served, relative to `<assets_dir>/leaflet/dist/`, under
/// `/assets/leaflet/`. Only these: a request never names a file path.
pub const LEAFLET_FILES: [&str; 7] = [
    "leaflet.js",
    "leaflet.css",
    "images/layers.png",
    "images/layers-2x.png",
    "images/marker-icon.png",
    "images/marker-icon-2x.png",
    "images/marker-shadow.png",
];

/// One asset in memory.
#[derive(Debug, Clone)]
pub struct Asset {
    /// The bytes.
    pub body: Bytes,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its `Cache-Control`.
    pub cache_control: &'static str,
    /// A strong validator (`"` + SHA-256 prefix + `"`).
    pub etag: String,
}

impl Asset {
    fn new(body: Bytes, content_type: &'static str, cache_control: &'static str) -> Self {
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        Self {
            body,
            content_type,
            cache_control,
            etag,
        }
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// Why the pages cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// `map_tile_url` breaks a rule.
    #[error("setting map_tile_url {0}")]
    TileUrl(String),
    /// A tile source is set but Leaflet is not installed.
    #[error(
        "setting map_tile_url needs Leaflet, but {0} is missing: run scripts/web-assets.sh \
         (npm ci into services/ingest-api/web) or point assets_dir at the node_modules directory \
         that holds leaflet/dist"
    )]
    LeafletMissing(String),
}

/// The origin (`scheme://host[:port]`) of an OpenStreetMap-style tile URL
/// template such as `https://tile.openstreetmap.org/{z}/{x}/{y}.png`: what
/// the pages' CSP allows for `img-src`. A leading `{s}.` subdomain
/// placeholder becomes the CSP wildcard `*.`.
pub fn tile_origin(template: &str) -> Result<String, WebError> {
    let bad = |rule: &str| WebError::TileUrl(rule.to_owned());
    if template.len() > 512 {
        return Err(bad("must be at most 512 characters"));
    }
    if template.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '"' | '\'' | ';' | ',' | '<' | '>' | '\\')
    }) {
        return Err(bad(
            "must not contain spaces, quotes, ';', ',', '<', '>' or '\\'",
        ));
    }
    let (scheme, rest) = template
        .split_once("://")
        .ok_or_else(|| bad("must start with https:// or http://"))?;
    if scheme != "https" && scheme != "http" {
        return Err(bad("must start with https:// or http://"));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    for placeholder in ["{z}", "{x}", "{y}"] {
        if !path.contains(placeholder) {
            return Err(bad(
                "must hold {z}, {x} and {y} in its path (an OpenStreetMap-style template)",
            ));
        }
    }
    let host = authority.strip_prefix("{s}.").unwrap_or(authority);
    let host_ok = !host.is_empty()
        && !host.starts_with(['.', '-', ':'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !host_ok {
        return Err(bad(
            "must name a host of letters, digits, '.' and '-' with an optional :port \
             (only a leading {s}. placeholder is allowed there)",
        ));
    }
    let wildcard = if authority.starts_with("{s}.") {
        "*."
    } else {
        ""
    };
    Ok(format!(
        "{scheme}://{wildcard}{}",
        host.to_ascii_lowercase()
    ))
}

/// The pages and assets, built once at startup.
#[derive(Debug, Clone)]
pub struct Web {
    /// `GET /map`.
    pub map_html: Bytes,
    /// `GET /track`.
    pub track_html: Bytes,
    /// The CSP of both pages.
    pub csp: String,
    /// `/assets/...` path (after `/assets/`) to asset.
    pub assets: HashMap<String, Asset>,
    /// Whether the pages use Leaflet (a tile source is set).
    pub leaflet: bool,
}

impl Web {
    /// Reads Leaflet from `settings.assets_dir` (when there) and builds the
    /// pages for the configured tile source.
    pub fn load(settings: &Settings) -> Result<Self, WebError> {
        let tile_origin = settings
            .map_tile_url
            .as_deref()
            .map(tile_origin)
            .transpose()?;
        let mut assets = HashMap::new();
        assets.insert(
            "courier-map.js".to_owned(),
            Asset::new(
                Bytes::from_static(COURIER_MAP_JS.as_bytes()),
                content_type("courier-map.js"),
                "no-cache",
            ),
        );
        let dist = settings.assets_dir.join("leaflet").join("dist");
        match load_leaflet(&dist) {
            Ok(files) => {
                tracing::info!(dir = %dist.display(), "serving Leaflet under /assets/leaflet/");
                assets.extend(files);
            }
            Err(e) if tile_origin.is_some() => {
                return Err(WebError::LeafletMissing(format!("{e:#}")));
            }
            Err(e) => {
                tracing::info!(
                    error = %format!("{e:#}"),
                    "Leaflet not installed; the maps draw the offline grid (no map_tile_url set)"
                );
            }
        }
        let leaflet = tile_origin.is_some();
        let config = serde_json::json!({
            "tileUrl": settings.map_tile_url,
            "attribution": settings.map_tile_attribution,
            "maxZoom": settings.map_tile_max_zoom,
        });
        // JSON inside <script>: no '<' may close the element early.
        let config = config.to_string().replace('<', "\\u003c");
        let mut head =
            format!("<script id=\"map-config\" type=\"application/json\">{config}</script>\n");
        if leaflet {
            head.push_str(
                "<link rel=\"stylesheet\" href=\"/assets/leaflet/leaflet.css\">\n\
                 <script src=\"/assets/leaflet/leaflet.js\"></script>\n",
            );
        }
        head.push_str("<script src=\"/assets/courier-map.js\"></script>");
        let img_src = match &tile_origin {
            Some(origin) => format!("img-src 'self' data: {origin}"),
            None => "img-src 'self' data:".to_owned(),
        };
        let csp = format!(
            "default-src 'none'; script-src 'self' 'unsafe-inline'; \
             style-src 'self' 'unsafe-inline'; connect-src 'self'; {img_src}; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
        );
        Ok(Self {
            map_html: Bytes::from(MAP_HTML.replacen(HEAD_MARK, &head, 1)),
            track_html: Bytes::from(TRACK_HTML.replacen(HEAD_MARK, &head, 1)),
            csp,
            assets,
            leaflet,
        })
    }
}

fn load_leaflet(dist: &Path) -> anyhow::Result<Vec<(String, Asset)>> {
    LEAFLET_FILES
        .iter()
        .map(|name| {
            let path = dist.join(name);
            let body =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok((
                format!("leaflet/{name}"),
                Asset::new(
                    Bytes::from(body),
                    content_type(name),
                    "public, max-age=86400",
                ),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_origin_is_the_scheme_and_host_of_the_template() {
        let ok = [
            (
                "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                "https://tile.openstreetmap.org",
            ),
            (
                "http://127.0.0.1:8123/tiles/{z}/{x}/{y}.png",
                "http://127.0.0.1:8123",
            ),
            (
                "https://{s}.tile.example.org/{z}/{x}/{y}.png?key=abc",
                "https://*.tile.example.org",
            ),
            (
                "https://Tiles.Example.org/{z}/{y}/{x}",
                "https://tiles.example.org",
            ),
        ];
        for (template, origin) in ok {
            assert_eq!(tile_origin(template).expect(template), origin);
        }
        let bad = [
            "ftp://tile.example.org/{z}/{x}/{y}.png",
            "tile.example.org/{z}/{x}/{y}.png",
            "https://tile.example.org/{z}/{x}.png",
            "https://tile.example.org/{z}/{x}/{y}.png; script-src *",
            "https://user@tile.example.org/{z}/{x}/{y}.png",
            "https://{s}/{z}/{x}/{y}.png",
            "https://a.{s}.example.org/{z}/{x}/{y}.png",
            "https:///{z}/{x}/{y}.png",
            "https://tile.example.org/{z}/{x}/{y}.png' 'unsafe-eval",
        ];
        for template in bad {
            let err = tile_origin(template).expect_err(template).to_string();
            assert!(err.starts_with("setting map_tile_url "), "{err}");
        }
    }

    #[test]
    fn without_tiles_the_pages_need_no_leaflet_and_allow_no_other_host() {
        let settings = Settings {
            assets_dir: "/nonexistent".into(),
            ..Settings::default()
        };
        let web = Web::load(&settings).expect("no tiles, no Leaflet needed");
        assert!(!web.leaflet);
        assert!(!web.csp.contains("http"), "{}", web.csp);
        let html = std::str::from_utf8(&web.map_html).expect("utf-8");
        assert!(!html.contains("leaflet.js") && html.contains("/assets/courier-map.js"));
        assert!(!html.contains(HEAD_MARK));
        assert!(web.assets.contains_key("courier-map.js"));
    }

    #[test]
    fn a_tile_source_without_leaflet_is_refused_at_startup() {
        let settings = Settings {
            assets_dir: "/nonexistent".into(),
            map_tile_url: Some("https://tile.openstreetmap.org/{z}/{x}/{y}.png".into()),
            ..Settings::default()
        };
        let err = Web::load(&settings).expect_err("no Leaflet").to_string();
        assert!(err.contains("scripts/web-assets.sh"), "{err}");
    }

    #[test]
    fn the_attribution_cannot_close_the_config_script() {
        let dir = tempfile::tempdir().expect("tmp");
        let dist = dir.path().join("leaflet/dist/images");
        std::fs::create_dir_all(&dist).expect("mkdir");
        for name in LEAFLET_FILES {
            std::fs::write(dir.path().join("leaflet/dist").join(name), name).expect("write");
        }
        let settings = Settings {
            assets_dir: dir.path().to_path_buf(),
            map_tile_url: Some("https://tile.openstreetmap.org/{z}/{x}/{y}.png".into()),
            map_tile_attribution: "</script><script>alert(1)</script>".into(),
            ..Settings::default()
        };
        let web = Web::load(&settings).expect("pages");
        let html = std::str::from_utf8(&web.track_html).expect("utf-8");
        assert!(!html.contains("</script><script>alert"), "{html}");
        assert!(html.contains("/assets/leaflet/leaflet.js"));
        assert!(
            web.csp
                .contains("img-src 'self' data: https://tile.openstreetmap.org;")
        );
        assert_eq!(
            web.assets["leaflet/leaflet.css"].content_type,
            "text/css; charset=utf-8"
        );
        assert_eq!(
            web.assets["leaflet/images/layers.png"].content_type,
            "image/png"
        );
    }
}
