//! The simulated fleet: couriers riding between random points of a city,
//! stopping at deliveries, with GPS noise on what their phones report.

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Metres per degree of latitude.
const M_PER_DEG_LAT: f64 = 111_320.0;

/// A rectangle of the map, in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    /// Southern edge.
    pub min_lat: f64,
    /// Western edge.
    pub min_lon: f64,
    /// Northern edge.
    pub max_lat: f64,
    /// Eastern edge.
    pub max_lon: f64,
}

impl BoundingBox {
    /// Central São Paulo.
    pub const SAO_PAULO: Self = Self {
        min_lat: -23.65,
        min_lon: -46.75,
        max_lat: -23.50,
        max_lon: -46.55,
    };

    /// Parses `min_lat,min_lon,max_lat,max_lon`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<f64> = text
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                format!(
                    "bounding box {text:?} must be four numbers: min_lat,min_lon,max_lat,max_lon"
                )
            })?;
        let [min_lat, min_lon, max_lat, max_lon] = parts[..] else {
            return Err(format!(
                "bounding box {text:?} must be four numbers: min_lat,min_lon,max_lat,max_lon"
            ));
        };
        let b = Self {
            min_lat,
            min_lon,
            max_lat,
            max_lon,
        };
        if !(-90.0..=90.0).contains(&min_lat)
            || !(-90.0..=90.0).contains(&max_lat)
            || !(-180.0..=180.0).contains(&min_lon)
            || !(-180.0..=180.0).contains(&max_lon)
            || min_lat >= max_lat
            || min_lon >= max_lon
        {
            return Err(format!(
                "bounding box {text:?} must have min < max within [-90, 90] x [-180, 180]"
            ));
        }
        Ok(b)
    }

    fn random_point(&self, rng: &mut StdRng) -> (f64, f64) {
        (
            rng.random_range(self.min_lat..self.max_lat),
            rng.random_range(self.min_lon..self.max_lon),
        )
    }
}

/// One sample as a phone would send it.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Idempotency key, kept on every retry.
    pub event_id: String,
    /// The courier.
    pub courier_id: String,
    /// Latitude with GPS noise.
    pub lat: f64,
    /// Longitude with GPS noise.
    pub lon: f64,
    /// Device time.
    pub recorded_at: String,
    /// Reported accuracy radius.
    pub accuracy_m: f64,
    /// Ground speed.
    pub speed_mps: f64,
    /// Heading, degrees from north.
    pub heading_deg: f64,
    /// Delivery in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

/// A courier's true state.
#[derive(Debug)]
pub struct Courier {
    /// Courier id.
    pub id: String,
    rng: StdRng,
    lat: f64,
    lon: f64,
    target: (f64, f64),
    speed: f64,
    cruise: f64,
    heading: f64,
    stop_left_s: f64,
    order: u32,
    bbox: BoundingBox,
}

fn uuid_from(rng: &mut StdRng) -> String {
    let bytes: [u8; 16] = rng.random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Courier {
    /// Courier `index` of a fleet seeded with `seed`: the same seed gives the
    /// same couriers, routes and event ids.
    pub fn new(seed: u64, index: usize, bbox: BoundingBox) -> Self {
        let mut rng =
            StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (lat, lon) = bbox.random_point(&mut rng);
        let target = bbox.random_point(&mut rng);
        let cruise = rng.random_range(4.0..11.0); // motorbike in city traffic
        Self {
            id: format!("courier-{index:05}"),
            rng,
            lat,
            lon,
            target,
            speed: 0.0,
            cruise,
            heading: 0.0,
            stop_left_s: 0.0,
            order: 0,
            bbox,
        }
    }

    /// True position (degrees).
    pub fn position(&self) -> (f64, f64) {
        (self.lat, self.lon)
    }

    /// Moves the courier `dt` seconds forward.
    pub fn advance(&mut self, dt: f64) {
        if self.stop_left_s > 0.0 {
            self.stop_left_s -= dt;
            self.speed = 0.0;
            return;
        }
        let m_per_deg_lon = M_PER_DEG_LAT * self.lat.to_radians().cos();
        let dy = (self.target.0 - self.lat) * M_PER_DEG_LAT;
        let dx = (self.target.1 - self.lon) * m_per_deg_lon;
        let distance = dx.hypot(dy);
        // Accelerate toward cruise speed with some traffic noise.
        let wanted = (self.cruise + normal(&mut self.rng) * 1.5).clamp(0.0, 20.0);
        self.speed += (wanted - self.speed) * (dt / 5.0).min(1.0);
        self.speed = self.speed.clamp(0.0, 20.0);
        let step = self.speed * dt;
        if distance <= step.max(5.0) {
            // Arrived: a delivery stop, then a new destination.
            self.lat = self.target.0;
            self.lon = self.target.1;
            self.stop_left_s = self.rng.random_range(20.0..120.0);
            self.order += 1;
            self.target = self.bbox.random_point(&mut self.rng);
            return;
        }
        self.heading = dx.atan2(dy).to_degrees().rem_euclid(360.0);
        self.lat += dy / distance * step / M_PER_DEG_LAT;
        self.lon += dx / distance * step / m_per_deg_lon;
    }

    /// What the phone reports now: the true position plus GPS noise.
    pub fn sample(&mut self, now: DateTime<Utc>, age: TimeDelta) -> Sample {
        let accuracy = self.rng.random_range(3.0..15.0);
        let m_per_deg_lon = M_PER_DEG_LAT * self.lat.to_radians().cos();
        let noise_n = normal(&mut self.rng) * accuracy / 2.0;
        let noise_e = normal(&mut self.rng) * accuracy / 2.0;
        let lat = (self.lat + noise_n / M_PER_DEG_LAT).clamp(-90.0, 90.0);
        let lon = (self.lon + noise_e / m_per_deg_lon).clamp(-180.0, 180.0);
        let round = |v: f64, digits: i32| (v * 10f64.powi(digits)).round() / 10f64.powi(digits);
        Sample {
            event_id: uuid_from(&mut self.rng),
            courier_id: self.id.clone(),
            lat: round(lat, 6),
            lon: round(lon, 6),
            recorded_at: (now - age).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            accuracy_m: round(accuracy, 1),
            speed_mps: round(self.speed, 2),
            heading_deg: round(self.heading, 1) % 360.0,
            order_id: (self.stop_left_s <= 0.0)
                .then(|| format!("order-{}-{}", self.id, self.order)),
        }
    }

    /// A random draw in [0, 1) from this courier's generator.
    pub fn chance(&mut self) -> f64 {
        self.rng.random()
    }

    /// A deliberately invalid sample of one of several kinds; returns the
    /// sample as JSON and the field the server must name.
    pub fn invalid_sample(&mut self, now: DateTime<Utc>) -> (serde_json::Value, &'static str) {
        let sample = self.sample(now, TimeDelta::zero());
        let mut value = serde_json::to_value(&sample).unwrap_or_default();
        let kind = self.rng.random_range(0..4);
        let field = match kind {
            0 => {
                value["lat"] = serde_json::json!(91.0 + self.rng.random_range(0.0..10.0));
                "lat"
            }
            1 => {
                value["speed_mps"] = serde_json::json!(250.0);
                "speed_mps"
            }
            2 => {
                value["recorded_at"] = serde_json::json!("yesterday");
                "recorded_at"
            }
            _ => {
                if let Some(obj) = value.as_object_mut() {
                    obj.remove("lon");
                }
                "lon"
            }
        };
        (value, field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_fleet() {
        let now = Utc::now();
        let mut a = Courier::new(42, 3, BoundingBox::SAO_PAULO);
        let mut b = Courier::new(42, 3, BoundingBox::SAO_PAULO);
        for _ in 0..100 {
            a.advance(2.0);
            b.advance(2.0);
        }
        let (sa, sb) = (
            a.sample(now, TimeDelta::zero()),
            b.sample(now, TimeDelta::zero()),
        );
        assert_eq!((sa.event_id, sa.lat, sa.lon), (sb.event_id, sb.lat, sb.lon));
        let mut c = Courier::new(43, 3, BoundingBox::SAO_PAULO);
        c.advance(2.0);
        assert_ne!(
            c.sample(now, TimeDelta::zero()).event_id,
            sa_id(&mut a, now)
        );
    }

    fn sa_id(c: &mut Courier, now: DateTime<Utc>) -> String {
        c.sample(now, TimeDelta::zero()).event_id
    }

    #[test]
    fn couriers_stay_in_the_box_at_plausible_speeds() {
        let bbox = BoundingBox::SAO_PAULO;
        let mut c = Courier::new(1, 0, bbox);
        for _ in 0..5000 {
            let before = c.position();
            c.advance(2.0);
            let after = c.position();
            let d = ((after.0 - before.0) * M_PER_DEG_LAT)
                .hypot((after.1 - before.1) * M_PER_DEG_LAT * 0.92);
            assert!(
                d <= 20.0 * 2.0 + 1e-6 || c.stop_left_s > 0.0,
                "jumped {d} m"
            );
            assert!((bbox.min_lat..=bbox.max_lat).contains(&after.0));
            assert!((bbox.min_lon..=bbox.max_lon).contains(&after.1));
            let s = c.sample(Utc::now(), TimeDelta::zero());
            assert!((0.0..=100.0).contains(&s.speed_mps) && (0.0..360.0).contains(&s.heading_deg));
        }
    }

    #[test]
    fn a_bad_bounding_box_is_refused_with_the_rule() {
        assert!(BoundingBox::parse("-23.6,-46.7,-23.5,-46.6").is_ok());
        let err = BoundingBox::parse("1,2,3").unwrap_err();
        assert!(err.contains("four numbers"));
        assert!(
            BoundingBox::parse("5,5,4,6")
                .unwrap_err()
                .contains("min < max")
        );
    }
}
