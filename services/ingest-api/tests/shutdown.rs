//! SIGTERM under load, on the real binary: every position answered `202` is
//! in the stream afterwards, and the process exits 0 within the grace period.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use support::binary::RunningBinary;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_keeps_every_acknowledged_position_and_exits_0() {
    let data_dir = tempfile::tempdir().expect("tmp");
    let (token, line) = ingest_api::auth::create_key("load", None).expect("key");
    let server = RunningBinary::start(
        &[
            "--linger-ms",
            "20",
            "--shutdown-grace-secs",
            "10",
            "--data-dir",
            &data_dir.path().to_string_lossy(),
        ],
        &[("INGEST_API_KEYS", &line)],
    );
    server.wait_ready().await;
    let (pid, base, log) = (server.pid(), server.base.clone(), Arc::clone(&server.log));
    let client = reqwest::Client::new();

    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let answered_after_term = Arc::new(AtomicUsize::new(0));
    let terminated = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..48 {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        let (acked, terminated, answered) = (
            Arc::clone(&acked),
            Arc::clone(&terminated),
            Arc::clone(&answered_after_term),
        );
        clients.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let items: Vec<Value> = (0..5)
                    .map(|i| position(&format!("courier-{c}-{i}"), &new_event_id()))
                    .collect();
                let ids: Vec<String> = items
                    .iter()
                    .map(|p| p["event_id"].as_str().unwrap_or_default().to_owned())
                    .collect();
                let after = terminated.load(Ordering::SeqCst);
                let res = client
                    .post(format!("{base}/v1/positions"))
                    .bearer_auth(&token)
                    .json(&json!({ "positions": items }))
                    .send()
                    .await;
                match res {
                    Ok(r) => {
                        if terminated.load(Ordering::SeqCst) {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        if r.status() == 202 {
                            acked.lock().extend(ids);
                        } else if after {
                            // 503 while shutting down: the client stops.
                            return;
                        }
                    }
                    // Once the signal is sent, a request that was still being
                    // sent can meet the closed listener or a closed idle
                    // connection: the server never received it. Requests it
                    // received are covered by the next test.
                    Err(_) if terminated.load(Ordering::SeqCst) => return,
                    Err(e) => panic!("request failed before SIGTERM: {e}"),
                }
            }
        }));
    }
    wait_for("load to build up", Duration::from_secs(30), || async {
        acked.lock().len() >= 2000
    })
    .await;

    let signalled = Instant::now();
    terminated.store(true, Ordering::SeqCst);
    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut server = server;
    let status = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .expect("join")
        .expect("wait");
    let took = signalled.elapsed();
    for c in clients {
        c.await.expect("client task");
    }
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        log.lock()
    );
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert!(
        log.lock().contains("every accepted position is written"),
        "{}",
        log.lock()
    );

    let stored: HashSet<String> = read_local_stream(data_dir.path(), "courier-positions")
        .into_iter()
        .map(|p| p.event_id)
        .collect();
    let acked = acked.lock();
    let missing = acked.difference(&stored).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acked positions are not in the stream",
        acked.len()
    );
    eprintln!(
        "acked {} positions; {} answers received after SIGTERM; shutdown took {took:?}",
        acked.len(),
        answered_after_term.load(Ordering::SeqCst)
    );
}

/// Requests waiting for their records when SIGTERM arrives are all answered
/// 202 (the batchers stop lingering and flush), long before the linger ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_waiting_request_with_202() {
    let data_dir = tempfile::tempdir().expect("tmp");
    let (token, line) = ingest_api::auth::create_key("waiting", None).expect("key");
    let mut server = RunningBinary::start(
        &[
            "--linger-ms",
            "20000",
            "--data-dir",
            &data_dir.path().to_string_lossy(),
        ],
        &[("INGEST_API_KEYS", &line)],
    );
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let mut waiting = Vec::new();
    let mut ids = HashSet::new();
    for c in 0..48 {
        let items: Vec<Value> = (0..5)
            .map(|i| position(&format!("courier-{c}-{i}"), &new_event_id()))
            .collect();
        ids.extend(
            items
                .iter()
                .map(|p| p["event_id"].as_str().unwrap_or_default().to_owned()),
        );
        let req = client
            .post(format!("{}/v1/positions", server.base))
            .bearer_auth(&token)
            .json(&json!({ "positions": items }));
        waiting.push(tokio::spawn(req.send()));
    }
    // The server holds every one of them (240 positions lingering).
    let metrics = format!("{}/metrics", server.base);
    wait_for(
        "all 48 requests to be waiting",
        Duration::from_secs(20),
        || async {
            match client.get(&metrics).send().await {
                Ok(r) => {
                    metric_value(
                        &r.text().await.unwrap_or_default(),
                        "ingest_inflight_positions",
                    ) >= 240.0
                }
                Err(_) => false,
            }
        },
    )
    .await;
    let signalled = Instant::now();
    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGTERM) }, 0);
    for w in waiting {
        let res = w
            .await
            .expect("join")
            .expect("every waiting request is answered");
        assert_eq!(res.status(), 202);
    }
    let status = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success());
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "{:?}",
        signalled.elapsed()
    );
    let stored: HashSet<String> = read_local_stream(data_dir.path(), "courier-positions")
        .into_iter()
        .map(|p| p.event_id)
        .collect();
    assert_eq!(stored, ids);
}
