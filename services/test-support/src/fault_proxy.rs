//! A fault-injecting proxy in front of a real Kinesis API server, for faults
//! the server cannot produce by itself. It speaks the real protocol:
//! - `throttle_every(n)`: every n-th `PutRecords` entry is not forwarded and
//!   is answered as failed with `ProvisionedThroughputExceededException`,
//!   exactly as Kinesis reports a partially failed call;
//! - `cut()`: every connection is dropped without an answer, until `restore()`;
//! - `stall(operation, pass)`: after letting `pass` calls of `operation` (for
//!   example `GetRecords`) through, holds every further one unanswered, as a
//!   hung network path does, until `restore()`; `held()` counts them;
//! - `lose_answer(method, path_suffix)`: forwards the next request with that
//!   method whose path ends with the suffix (an S3 object, say), lets the
//!   server carry it out, then drops the connection instead of answering:
//!   the request took effect but the client never hears so; `lost()` counts;
//! - `expire_through(n)`: `GetRecords` answers leave out every record whose
//!   sequence number is at most n, as Kinesis does once they passed the
//!   stream's retention (moto keeps records forever).
//!
//! Requests are forwarded with their own method, path and query, so the
//! proxy stands in front of the server's S3 API as well.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Default)]
struct State {
    upstream: String,
    throttle_every: AtomicUsize,
    entries_seen: AtomicUsize,
    throttled: AtomicUsize,
    down: AtomicBool,
    stall: std::sync::Mutex<Option<(String, usize)>>,
    held: AtomicUsize,
    released: tokio::sync::Notify,
    lose: std::sync::Mutex<Option<(String, String)>>,
    lost: AtomicUsize,
    expired_through: AtomicUsize,
}

pub struct FaultProxy {
    state: Arc<State>,
    pub endpoint: String,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(State {
            upstream: upstream.to_owned(),
            ..State::default()
        });
        let client = reqwest::Client::new();
        let accept_state = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if accept_state.down.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let state = Arc::clone(&accept_state);
                let client = client.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| handle(req, Arc::clone(&state), client.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { state, endpoint }
    }

    pub fn throttle_every(&self, n: usize) {
        self.state.throttle_every.store(n, Ordering::SeqCst);
    }

    pub fn throttled(&self) -> usize {
        self.state.throttled.load(Ordering::SeqCst)
    }

    pub fn cut(&self) {
        self.state.down.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.state.down.store(false, Ordering::SeqCst);
        if let Ok(mut stall) = self.state.stall.lock() {
            *stall = None;
        }
        self.state.released.notify_waiters();
    }

    pub fn stall(&self, operation: &str, pass: usize) {
        if let Ok(mut stall) = self.state.stall.lock() {
            *stall = Some((format!(".{operation}"), pass));
        }
    }

    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    pub fn lose_answer(&self, method: &str, path_suffix: &str) {
        if let Ok(mut lose) = self.state.lose.lock() {
            *lose = Some((method.to_owned(), path_suffix.to_owned()));
        }
    }

    pub fn expire_through(&self, sequence_number: usize) {
        self.state
            .expired_through
            .store(sequence_number, Ordering::SeqCst);
    }

    pub fn lost(&self) -> usize {
        self.state.lost.load(Ordering::SeqCst)
    }
}

/// Whether the answer to this request must be lost (once per `lose_answer`).
fn must_lose(state: &State, method: &str, path: &str) -> bool {
    let Ok(mut lose) = state.lose.lock() else {
        return false;
    };
    let hit = lose
        .as_ref()
        .is_some_and(|(m, suffix)| m == method && path.ends_with(suffix.as_str()));
    if hit {
        *lose = None;
        state.lost.fetch_add(1, Ordering::SeqCst);
    }
    hit
}

/// Whether this call must be held (and counts the calls let through).
fn must_hold(state: &State, target: &str) -> bool {
    let Ok(mut stall) = state.stall.lock() else {
        return false;
    };
    match stall.as_mut() {
        Some((operation, pass)) if target.ends_with(operation.as_str()) => {
            if *pass > 0 {
                *pass -= 1;
                false
            } else {
                true
            }
        }
        _ => false,
    }
}

#[derive(Debug)]
struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection cut by the fault proxy")
    }
}

impl std::error::Error for Cut {}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    client: reqwest::Client,
) -> Result<Response<Full<Bytes>>, Cut> {
    if state.down.load(Ordering::SeqCst) {
        // An error from the service makes hyper close the connection
        // without an answer: what a client sees when the network drops.
        return Err(Cut);
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Cut)?.to_bytes();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if must_hold(&state, &target) {
        state.held.fetch_add(1, Ordering::SeqCst);
        loop {
            let released = state.released.notified();
            let still = state.stall.lock().map(|s| s.is_some()).unwrap_or(false);
            if !still {
                break;
            }
            released.await;
        }
    }
    let every = state.throttle_every.load(Ordering::SeqCst);
    let mut failed_at: Vec<usize> = Vec::new();
    let mut forward_body = body.clone();
    if target.ends_with(".PutRecords") && every > 0 {
        let mut request: Value = serde_json::from_slice(&body).map_err(|_| Cut)?;
        if let Some(records) = request["Records"].as_array_mut() {
            let mut kept = Vec::new();
            for (i, record) in records.drain(..).enumerate() {
                if state.entries_seen.fetch_add(1, Ordering::SeqCst) % every == every - 1 {
                    failed_at.push(i);
                } else {
                    kept.push(record);
                }
            }
            *records = kept;
        }
        forward_body = Bytes::from(serde_json::to_vec(&request).map_err(|_| Cut)?);
    }
    let kept_any = !target.ends_with(".PutRecords")
        || failed_at.is_empty()
        || serde_json::from_slice::<Value>(&forward_body)
            .ok()
            .and_then(|v| v["Records"].as_array().map(|r| !r.is_empty()))
            .unwrap_or(false);
    let lose = must_lose(&state, parts.method.as_str(), parts.uri.path());
    let (status, headers, upstream_body) = if kept_any {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut forward = client.request(parts.method.clone(), format!("{}{path}", state.upstream));
        for (name, value) in &parts.headers {
            if name != "host" && name != "content-length" {
                forward = forward.header(name, value);
            }
        }
        let res = forward.body(forward_body).send().await.map_err(|_| Cut)?;
        let status = res.status().as_u16();
        // Every header of the answer (S3 clients read ETag, Last-Modified...);
        // hyper sets the framing headers itself.
        let mut headers = res.headers().clone();
        headers.remove("content-length");
        headers.remove("transfer-encoding");
        headers.remove("connection");
        let body = res.bytes().await.map_err(|_| Cut)?;
        if lose {
            // Carried out by the server; the client never hears of it.
            return Err(Cut);
        }
        (status, headers, body)
    } else {
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        (
            200,
            headers,
            Bytes::from_static(br#"{"FailedRecordCount":0,"Records":[]}"#),
        )
    };
    let expired = state.expired_through.load(Ordering::SeqCst);
    let body = if target.ends_with(".GetRecords") && expired > 0 && status == 200 {
        let mut answer: Value = serde_json::from_slice(&upstream_body).map_err(|_| Cut)?;
        if let Some(records) = answer["Records"].as_array_mut() {
            records.retain(|r| {
                r["SequenceNumber"]
                    .as_str()
                    .and_then(|s| s.parse::<u128>().ok())
                    .is_none_or(|seq| seq > expired as u128)
            });
        }
        Bytes::from(serde_json::to_vec(&answer).map_err(|_| Cut)?)
    } else if failed_at.is_empty() || status != 200 {
        upstream_body
    } else {
        let upstream: Value = serde_json::from_slice(&upstream_body).map_err(|_| Cut)?;
        let mut answered = upstream["Records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter();
        let total = answered.len() + failed_at.len();
        let mut records = Vec::with_capacity(total);
        for i in 0..total {
            if failed_at.contains(&i) {
                records.push(json!({
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": "Rate exceeded for shard shardId-000000000000 in stream test under account 123456789012."
                }));
            } else {
                records.push(answered.next().unwrap_or(Value::Null));
            }
        }
        state.throttled.fetch_add(failed_at.len(), Ordering::SeqCst);
        let failed = upstream["FailedRecordCount"].as_u64().unwrap_or(0) + failed_at.len() as u64;
        Bytes::from(
            serde_json::to_vec(&json!({"FailedRecordCount": failed, "Records": records}))
                .map_err(|_| Cut)?,
        )
    };
    let mut response = Response::builder()
        .status(status)
        .body(Full::new(body))
        .map_err(|_| Cut)?;
    *response.headers_mut() = headers;
    Ok(response)
}
