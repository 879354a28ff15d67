//! The control socket's and the metrics endpoint's limits, against the
//! real servers: a connection cap (over it, closed at once) and an idle
//! timeout, so local clients cannot pin the agent's descriptors.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use xnlb::control::server::{self, Command};
use xnlb::control::Response;

/// Answers every control request with `pong` (the protocol thread's part).
fn responder() -> mpsc::Sender<Command> {
    let (tx, mut rx) = mpsc::channel::<Command>(64);
    tokio::spawn(async move {
        while let Some((_req, reply)) = rx.recv().await {
            let _ = reply.send(Response::ok("pong"));
        }
    });
    tx
}

fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("xnlb-ctl-{tag}-{}.sock", std::process::id()))
}

/// Waits for EOF (or a reset) on `s`: how long it took, `None` if the
/// server kept it open for `within`.
async fn closed_within<S: AsyncReadExt + Unpin>(s: &mut S, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut b = [0u8; 256];
    loop {
        match tokio::time::timeout(within.saturating_sub(t.elapsed()), s.read(&mut b)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

async fn ping(path: &std::path::Path) -> Option<String> {
    let mut s = tokio::net::UnixStream::connect(path).await.ok()?;
    s.write_all(b"{\"cmd\":\"status\"}\n").await.ok()?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn control_connections_over_the_cap_are_closed_at_once() {
    let path = socket_path("cap");
    let listener = server::bind(&path).expect("bind");
    tokio::spawn(server::serve(listener, responder()));
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(
            tokio::net::UnixStream::connect(&path)
                .await
                .expect("connect"),
        );
    }
    // Let the server accept all 64.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let took = closed_within(&mut extra, Duration::from_secs(2)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(1)),
        "the 65th connection was not closed at once (closed after {took:?})"
    );
    // A slot frees up when a client leaves; the socket still answers.
    drop(idle.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = ping(&path).await;
    assert!(
        answer.as_deref().is_some_and(|a| a.contains("pong")),
        "after a slot freed up: {answer:?}"
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn an_idle_control_client_is_disconnected() {
    let path = socket_path("idle");
    let listener = server::bind(&path).expect("bind");
    tokio::spawn(server::serve(listener, responder()));
    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let took = closed_within(&mut s, Duration::from_secs(8)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_secs(4)),
        "an idle client must be dropped after about 5 s, got {took:?}"
    );
    // A client that sends a request without its newline, forever.
    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    s.write_all(b"{\"cmd\":").await.expect("write");
    let took = closed_within(&mut s, Duration::from_secs(8)).await;
    assert!(
        took.is_some(),
        "a half-sent request held the connection open"
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn metrics_connections_are_capped_and_idle_ones_dropped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(xnlb::metrics::serve(listener, responder()));
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let took = closed_within(&mut extra, Duration::from_secs(2)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(1)),
        "the 65th metrics connection was not closed at once ({took:?})"
    );
    let took = closed_within(&mut idle[0], Duration::from_secs(8)).await;
    assert!(
        took.is_some(),
        "an idle metrics client was kept for more than 8 s"
    );
}
