//! The live feed of accepted positions behind `GET /v1/positions/stream`
//! (server-sent events) and the map page `GET /map`.
//!
//! Positions are published after they are durable, next to the tracker.
//! Publishing never blocks and never waits for a viewer: it is a no-op (one
//! atomic load, no serialization) without viewers; with viewers each position
//! is serialized once into a ready SSE frame and put into a bounded
//! [`tokio::sync::broadcast`] ring shared by every viewer. A viewer that falls
//! more than the ring's capacity behind gets an `event: lagged` with the
//! number of events it missed and continues from the newest.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chrono::SecondsFormat;
use courier_model::position::Position;
use futures::Stream;
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::metrics::Metrics;

/// How often an idle stream sends a `: keep-alive` comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One position as sent to viewers.
#[derive(Serialize)]
struct LiveEvent<'a> {
    courier_id: &'a str,
    lat: f64,
    lon: f64,
    recorded_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed_mps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heading_deg: Option<f64>,
}

/// The SSE frame `data: {...}\n\n` of one position.
pub(crate) fn frame(p: &Position) -> Bytes {
    let event = LiveEvent {
        courier_id: p.courier_id.as_str(),
        lat: p.lat.get(),
        lon: p.lon.get(),
        recorded_at: p.recorded_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        speed_mps: p.speed_mps.map(|v| v.get()),
        heading_deg: p.heading_deg.map(|v| v.get()),
    };
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"data: ");
    // Serializing plain numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &event);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The broadcast of accepted positions.
pub struct LiveFeed {
    tx: broadcast::Sender<Bytes>,
    viewers: Arc<AtomicUsize>,
    closed: watch::Sender<bool>,
    metrics: Metrics,
}

impl LiveFeed {
    /// A feed keeping at most `capacity` (at least 1) events per slow viewer.
    pub fn new(capacity: usize, metrics: Metrics) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let (closed, _) = watch::channel(false);
        Self {
            tx,
            viewers: Arc::new(AtomicUsize::new(0)),
            closed,
            metrics,
        }
    }

    /// Viewers connected now.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// Sends accepted positions to every viewer; never blocks, and does
    /// nothing (no serialization) when nobody is watching.
    pub fn publish(&self, positions: &[Position]) {
        if self.viewers.load(Ordering::Relaxed) == 0 {
            return;
        }
        for p in positions {
            // Err only means every viewer left meanwhile.
            if self.tx.send(frame(p)).is_err() {
                return;
            }
        }
    }

    /// Sends ready SSE frames (`data: ...\n\n` one after the other, as the
    /// shared store publishes them) to every viewer, one event per frame;
    /// never blocks, and does nothing when nobody is watching.
    pub fn publish_frames(&self, frames: &[u8]) {
        if self.viewers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut rest = frames;
        while !rest.is_empty() {
            let end = rest
                .windows(2)
                .position(|w| w == b"\n\n")
                .map_or(rest.len(), |i| i + 2);
            let (one, tail) = rest.split_at(end);
            rest = tail;
            if one.starts_with(b"data: ") && self.tx.send(Bytes::copy_from_slice(one)).is_err() {
                return;
            }
        }
    }

    /// Ends every stream (shutdown has begun) so that the server's graceful
    /// stop does not wait for viewers.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// A new viewer's SSE body: a `: connected` comment, then one frame per
    /// accepted position, `event: lagged` after a gap, `: keep-alive` every
    /// [`KEEP_ALIVE`] when idle. Ends when the feed is closed.
    pub fn subscribe(&self) -> LiveStream {
        self.subscribe_with(KEEP_ALIVE)
    }

    /// Like [`LiveFeed::subscribe`], with another keep-alive period.
    pub fn subscribe_with(&self, keep_alive: Duration) -> LiveStream {
        let viewer = Viewer::new(Arc::clone(&self.viewers), self.metrics.clone());
        let state = ViewerState {
            rx: self.tx.subscribe(),
            closed: self.closed.subscribe(),
            keep_alive,
            viewer,
        };
        LiveStream {
            hello: true,
            next: Some(Box::pin(state.next())),
        }
    }
}

/// Counts a connected viewer for as long as it lives.
struct Viewer {
    count: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl Viewer {
    fn new(count: Arc<AtomicUsize>, metrics: Metrics) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        metrics.stream_viewers.inc();
        Self { count, metrics }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.metrics.stream_viewers.dec();
    }
}

struct ViewerState {
    rx: broadcast::Receiver<Bytes>,
    closed: watch::Receiver<bool>,
    keep_alive: Duration,
    viewer: Viewer,
}

impl ViewerState {
    /// Waits for the next frame; `None` ends the stream.
    async fn next(mut self) -> Option<(Bytes, Self)> {
        if *self.closed.borrow() {
            return None;
        }
        let frame = tokio::select! {
            biased;
            _ = self.closed.changed() => return None,
            received = self.rx.recv() => match received {
                Ok(frame) => frame,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Skip what is still queued too: continue from the newest.
                    let newest = self.rx.resubscribe();
                    let skipped = missed
                        + self.rx.len().saturating_sub(newest.len()) as u64;
                    self.rx = newest;
                    self.viewer.metrics.stream_events_dropped.inc_by(skipped);
                    Bytes::from(format!("event: lagged\ndata: {skipped}\n\n"))
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            () = tokio::time::sleep(self.keep_alive) => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((frame, self))
    }
}

/// The body of one viewer's `text/event-stream` response.
pub struct LiveStream {
    hello: bool,
    next: Option<BoxFuture<'static, Option<(Bytes, ViewerState)>>>,
}

impl Stream for LiveStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.hello {
            // Sent at once, so the client sees the response start.
            self.hello = false;
            return Poll::Ready(Some(Ok(Bytes::from_static(b": connected\n\n"))));
        }
        let Some(next) = self.next.as_mut() else {
            return Poll::Ready(None);
        };
        match next.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.next = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some((frame, state))) => {
                self.next = Some(Box::pin(state.next()));
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_model::position::TimeRules;
    use futures::StreamExt;

    fn positions(n: usize) -> Vec<Position> {
        let now = chrono::Utc::now();
        (0..n)
            .map(|i| {
                let body = serde_json::json!({
                    "courier_id": format!("c-{i}"),
                    "lat": -23.55,
                    "lon": -46.63,
                    "recorded_at": now.to_rfc3339(),
                    "speed_mps": 3.5,
                })
                .to_string();
                let envelope = crate::payload::parse_body(body.as_bytes(), 10).expect("parse");
                let raw = &envelope.positions()[0];
                raw.check(0, now, &TimeRules::default())
                    .unwrap_or_else(|_| panic!("valid"))
            })
            .collect()
    }

    async fn next_frame(stream: &mut LiveStream) -> String {
        let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("infallible");
        String::from_utf8(item.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn without_viewers_nothing_is_sent_and_viewers_are_counted() {
        let metrics = Metrics::new();
        let feed = LiveFeed::new(4, metrics.clone());
        feed.publish(&positions(3));
        assert_eq!(feed.tx.len(), 0);
        let stream = feed.subscribe();
        assert_eq!(feed.viewers(), 1);
        assert_eq!(metrics.stream_viewers.get(), 1);
        drop(stream);
        assert_eq!(feed.viewers(), 0);
        assert_eq!(metrics.stream_viewers.get(), 0);
    }

    #[tokio::test]
    async fn a_lagging_viewer_is_told_how_many_it_missed_and_continues_from_the_newest() {
        let metrics = Metrics::new();
        let feed = LiveFeed::new(4, metrics.clone());
        let mut stream = feed.subscribe();
        assert_eq!(next_frame(&mut stream).await, ": connected\n\n");
        let sent = positions(10);
        feed.publish(&sent);
        assert_eq!(next_frame(&mut stream).await, "event: lagged\ndata: 10\n\n");
        assert_eq!(metrics.stream_events_dropped.get(), 10);
        feed.publish(&sent[..1]);
        let data = next_frame(&mut stream).await;
        let json: serde_json::Value = serde_json::from_str(
            data.strip_prefix("data: ")
                .and_then(|d| d.strip_suffix("\n\n"))
                .expect("a data frame"),
        )
        .expect("json");
        assert_eq!(json["courier_id"], "c-0");
        assert_eq!(json["speed_mps"], 3.5);
    }

    #[tokio::test]
    async fn frames_from_the_shared_feed_reach_viewers_one_event_each() {
        let feed = LiveFeed::new(16, Metrics::new());
        let sent = positions(3);
        let joined: Vec<u8> = sent.iter().flat_map(|p| frame(p).to_vec()).collect();
        feed.publish_frames(&joined);
        assert_eq!(feed.tx.len(), 0, "nothing sent without viewers");
        let mut stream = feed.subscribe();
        assert_eq!(next_frame(&mut stream).await, ": connected\n\n");
        feed.publish_frames(&joined);
        for p in &sent {
            assert_eq!(next_frame(&mut stream).await.as_bytes(), &frame(p)[..]);
        }
    }

    #[tokio::test]
    async fn an_idle_stream_sends_keep_alives_and_ends_on_close() {
        let feed = LiveFeed::new(4, Metrics::new());
        let mut stream = feed.subscribe_with(Duration::from_millis(20));
        assert_eq!(next_frame(&mut stream).await, ": connected\n\n");
        assert_eq!(next_frame(&mut stream).await, ": keep-alive\n\n");
        feed.close();
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("ends in time");
        assert!(end.is_none());
    }
}
