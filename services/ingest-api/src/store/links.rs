//! Customer tracking links: for one order, a link that shows the courier
//! carrying it until the link expires or is revoked.
//!
//! The token is 256 bits from the operating system's CSPRNG (through
//! `rand`'s thread generator, a ChaCha CSPRNG seeded from the OS), written
//! `trk_` and 43 URL-safe characters. The store never holds the token: a link
//! is kept under its *link id*, the hex SHA-256 of the token, which is also
//! what dispatch uses to revoke it. The record expires by itself at the
//! link's `expires_at` (Redis: `SET ... PXAT`; embedded: checked on every
//! read and pruned on every creation).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;

/// Prefix of every tracking token.
pub const TOKEN_PREFIX: &str = "trk_";
/// Length of a token: the prefix and 43 characters of 256 bits.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 43;
/// Active links the embedded store holds at most.
pub const MAX_EMBEDDED_LINKS: usize = 100_000;

/// A tracking link as the store keeps it (never with its token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// The order.
    pub order_id: String,
    /// The courier carrying it: the only one the link shows.
    pub courier_id: String,
    /// When the link was created.
    #[serde(with = "super::micros")]
    pub created_at: DateTime<Utc>,
    /// When the link stops answering.
    #[serde(with = "super::micros")]
    pub expires_at: DateTime<Utc>,
}

impl LinkRecord {
    /// Whether the link answers at `now`.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}

/// A new random token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut token = String::with_capacity(TOKEN_LEN);
    token.push_str(TOKEN_PREFIX);
    let (mut acc, mut bits) = (0u32, 0);
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            token.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    token.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    token
}

/// Whether `token` has the shape of a token (checked before any store call).
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The link id of a token: its hex SHA-256.
pub fn link_id(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `id` has the shape of a link id (64 lowercase hex digits).
pub fn valid_link_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The links of the embedded store (this process only).
#[derive(Debug, Default)]
pub struct EmbeddedLinks {
    by_id: Mutex<HashMap<String, LinkRecord>>,
}

impl EmbeddedLinks {
    /// Keeps a link; forgets expired ones first.
    pub fn put(&self, id: String, record: LinkRecord) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut links = self.by_id.lock();
        links.retain(|_, r| r.active_at(now));
        if links.len() >= MAX_EMBEDDED_LINKS {
            return Err(StoreError::Unavailable(format!(
                "{MAX_EMBEDDED_LINKS} tracking links are active in this process"
            )));
        }
        links.insert(id, record);
        Ok(())
    }

    /// The link, while it is active.
    pub fn get(&self, id: &str) -> Option<LinkRecord> {
        let now = Utc::now();
        let mut links = self.by_id.lock();
        match links.get(id) {
            Some(r) if r.active_at(now) => Some(r.clone()),
            Some(_) => {
                links.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a link; whether an active one was there.
    pub fn remove(&self, id: &str) -> bool {
        let now = Utc::now();
        self.by_id
            .lock()
            .remove(id)
            .is_some_and(|r| r.active_at(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_well_formed_distinct_and_their_ids_are_hashes() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(valid_link_id(&link_id(&a)));
        assert_ne!(link_id(&a), link_id(&b));
        assert!(!link_id(&a).contains(&a[TOKEN_PREFIX.len()..]));
        let mut tampered = a.clone();
        tampered.replace_range(TOKEN_LEN - 1.., "!");
        assert!(!well_formed(&tampered));
        assert!(!well_formed(&a[..TOKEN_LEN - 1]));
        assert!(!well_formed(&format!("xyz_{}", &a[4..])));
        assert!(!valid_link_id(&link_id(&a).to_uppercase()));
    }

    #[test]
    fn an_embedded_link_answers_until_it_expires_or_is_removed() {
        let links = EmbeddedLinks::default();
        let now = Utc::now();
        let record = |secs: i64| LinkRecord {
            order_id: "o-1".into(),
            courier_id: "c-1".into(),
            created_at: now,
            expires_at: now + chrono::TimeDelta::seconds(secs),
        };
        links.put("live".into(), record(60)).expect("put");
        links.put("gone".into(), record(-1)).expect("put");
        assert_eq!(links.get("live"), Some(record(60)));
        assert_eq!(links.get("gone"), None);
        assert!(links.remove("live"));
        assert!(!links.remove("live"));
        assert_eq!(links.get("live"), None);
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let r = LinkRecord {
            order_id: "o-1".into(),
            courier_id: "c-1".into(),
            created_at: "2026-12-02T10:00:00.000001Z".parse().expect("time"),
            expires_at: "2026-12-02T11:00:00Z".parse().expect("time"),
        };
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(serde_json::from_str::<LinkRecord>(&json).expect("back"), r);
    }
}
