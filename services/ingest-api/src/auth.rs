//! API keys: stored only as SHA-256 hashes, each with an optional
//! requests-per-second limit enforced by a token bucket.
//!
//! Key file format, one key per line (blank lines and `#` comments ignored):
//! `NAME:SHA256_HEX[:REQUESTS_PER_SECOND]`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Errors of reading API keys.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file could not be read.
    #[error("cannot read API keys file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line breaks the format.
    #[error("API keys line {line}: {message} (expected NAME:SHA256_HEX[:REQUESTS_PER_SECOND])")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No key at all: the service would refuse every request.
    #[error(
        "no API keys configured: pass --api-keys-file (INGEST_API_KEYS_FILE) or --api-keys (INGEST_API_KEYS); create one with `ingest-api keys create NAME`"
    )]
    None,
}

/// A configured API key.
#[derive(Debug)]
pub struct ApiKey {
    /// The key's name (for logs and metrics, never the token).
    pub name: String,
    limiter: Option<Mutex<TokenBucket>>,
}

#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        let capacity = rate.max(1.0);
        Self {
            rate,
            capacity,
            tokens: capacity,
            updated: Instant::now(),
        }
    }

    /// Takes one token, or says how long until one is available.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

impl ApiKey {
    /// Counts one request against the key's limit; `Err` holds how long the
    /// client should wait.
    pub fn check_rate(&self) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(bucket) => bucket.lock().take(Instant::now()),
        }
    }
}

/// All configured keys, by the SHA-256 of their token.
#[derive(Debug, Default, Clone)]
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], Arc<ApiKey>>,
}

/// The hex SHA-256 of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl ApiKeys {
    /// Parses key lines.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let mut keys = Self::default();
        for (i, raw) in text.split(['\n', ',']).enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| KeysError::Line {
                line: i + 1,
                message,
            };
            let mut parts = line.split(':');
            let name = parts.next().unwrap_or_default();
            let hash = parts.next().ok_or_else(|| err("missing the hash".into()))?;
            let rps = parts.next();
            if parts.next().is_some() {
                return Err(err("too many ':'-separated parts".into()));
            }
            courier_model::position::CourierId::parse(name).map_err(|_| {
                err(format!(
                    "name {name:?} must be 1-64 characters of [A-Za-z0-9_-]"
                ))
            })?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hash, &mut digest)
                .map_err(|_| err("the hash must be 64 hex digits (SHA-256 of the token)".into()))?;
            let limiter = match rps {
                None | Some("") => None,
                Some(text) => {
                    let rate: f64 = text
                        .parse()
                        .ok()
                        .filter(|r: &f64| r.is_finite() && *r > 0.0)
                        .ok_or_else(|| {
                            err(format!("requests per second {text:?} must be a number > 0"))
                        })?;
                    Some(Mutex::new(TokenBucket::new(rate)))
                }
            };
            if keys.by_hash.contains_key(&digest) {
                return Err(err(format!(
                    "key {name} repeats the hash of an earlier line"
                )));
            }
            keys.by_hash.insert(
                digest,
                Arc::new(ApiKey {
                    name: name.to_owned(),
                    limiter,
                }),
            );
        }
        Ok(keys)
    }

    /// Loads keys from a file and/or inline text; at least one key is required.
    pub fn load(file: Option<&Path>, inline: Option<&str>) -> Result<Self, KeysError> {
        let mut keys = Self::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
                path: path.display().to_string(),
                source,
            })?;
            keys.by_hash.extend(Self::parse(&text)?.by_hash);
        }
        if let Some(text) = inline {
            keys.by_hash.extend(Self::parse(text)?.by_hash);
        }
        if keys.by_hash.is_empty() {
            return Err(KeysError::None);
        }
        Ok(keys)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The key a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Arc<ApiKey>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&digest).cloned()
    }
}

/// A new random token (`cpk_` and 43 URL-safe characters of 256 random bits)
/// and its key-file line.
pub fn create_key(name: &str, rps: Option<f64>) -> Result<(String, String), KeysError> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut token = String::from("cpk_");
    // 6 bits per character.
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            token.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        token.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    let line = match rps {
        Some(r) => format!("{name}:{}:{r}", hash_token(&token)),
        None => format!("{name}:{}", hash_token(&token)),
    };
    // Validate the line we print with the same parser the service uses.
    ApiKeys::parse(&line)?;
    Ok((token, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_authenticates_by_its_hash_only() {
        let (token, line) = create_key("courier-app", Some(5.0)).expect("create");
        assert!(!line.contains(&token));
        let keys = ApiKeys::parse(&line).expect("parse");
        assert_eq!(
            keys.authenticate(&token).expect("known").name,
            "courier-app"
        );
        assert!(keys.authenticate("cpk_wrong").is_none());
    }

    #[test]
    fn bad_lines_name_the_line_and_the_rule() {
        let err = ApiKeys::parse("# comment\n\napp:nothex")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("64 hex digits"),
            "{err}"
        );
        let ok = format!("app:{}", hash_token("t"));
        let err = ApiKeys::parse(&format!("{ok}:0")).unwrap_err().to_string();
        assert!(err.contains("must be a number > 0"), "{err}");
    }

    #[test]
    fn no_keys_is_an_error_that_says_what_to_do() {
        let err = ApiKeys::load(None, Some("  ")).unwrap_err().to_string();
        assert!(err.contains("ingest-api keys create"), "{err}");
    }

    #[test]
    fn the_token_bucket_limits_and_says_when_to_retry() {
        let mut bucket = TokenBucket::new(2.0);
        let t0 = Instant::now();
        assert!(bucket.take(t0).is_ok());
        assert!(bucket.take(t0).is_ok());
        let wait = bucket.take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO);
        assert!(bucket.take(t0 + Duration::from_millis(500)).is_ok());
    }
}
