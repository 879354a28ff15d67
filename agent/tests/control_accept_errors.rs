//! The control socket outlives a failed `accept`: out of descriptors
//! (EMFILE), the accept loop must log, wait and carry on, not end and leave
//! the node unmanageable. Its own test binary: it lowers this process's
//! descriptor limit.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use xnlb::control::server::{self, Command};
use xnlb::control::Response;

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(64)
}

fn set_nofile(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let old = lim.rlim_cur;
        lim.rlim_cur = soft.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
        old
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_control_socket_keeps_serving_after_running_out_of_descriptors() {
    let path = std::env::temp_dir().join(format!("xnlb-ctl-emfile-{}.sock", std::process::id()));
    let listener = server::bind(&path).expect("bind");
    let (tx, mut rx) = mpsc::channel::<Command>(8);
    tokio::spawn(async move {
        while let Some((_req, reply)) = rx.recv().await {
            let _ = reply.send(Response::ok("pong"));
        }
    });
    tokio::spawn(server::serve(listener, tx));

    // Leave room for a few client sockets only: the server's accepts fail
    // with EMFILE while the clients hold the rest.
    let old = set_nofile(open_fds() + 6);
    let mut clients = Vec::new();
    for _ in 0..12 {
        match tokio::net::UnixStream::connect(&path).await {
            Ok(c) => clients.push(c),
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(clients);
    set_nofile(old);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let answer = async {
        let mut s = tokio::net::UnixStream::connect(&path).await.ok()?;
        s.write_all(b"{\"cmd\":\"status\"}\n").await.ok()?;
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
    .await;
    let _ = std::fs::remove_file(&path);
    assert!(
        answer.as_deref().is_some_and(|a| a.contains("pong")),
        "after EMFILE the control socket no longer answers: {answer:?}"
    );
}
