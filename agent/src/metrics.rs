//! Prometheus text on `[control] metrics` (`GET /metrics`).
//!
//! Each scrape asks the protocol thread for a status snapshot and renders it
//! with `prometheus-client`; nothing is kept between scrapes, so a metric
//! can never drift from what `xnlb status` says.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::admission::{accept_failed, Admission, Limits};
use crate::control::server::Command;
use crate::runtime::status_via;
use crate::status::{RepairHistogram, StatusView, REPAIR_BUCKETS_MS};

type Labels = Vec<(String, String)>;

/// A counter family with one counter per entry of `values`, labelled
/// `label`.
fn counters_by(
    label: &str,
    values: &std::collections::BTreeMap<String, u64>,
) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    for (name, v) in values {
        family
            .get_or_create(&vec![(label.to_string(), name.clone())])
            .inc_by(*v);
    }
    family
}

/// The agent's failover-repair histogram as a Prometheus histogram: its
/// counts grow for the agent's whole life (the agent keeps them, see
/// [`RepairHistogram`]), so `rate()` and `histogram_quantile()` work.
#[derive(Debug)]
struct RepairMetric(RepairHistogram);

impl EncodeMetric for RepairMetric {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per-bucket counts, the last one +Inf (f64::MAX is how
        // prometheus-client spells it); the encoder makes them cumulative.
        let buckets: Vec<(f64, u64)> = REPAIR_BUCKETS_MS
            .iter()
            .copied()
            .chain([f64::MAX])
            .enumerate()
            .map(|(i, le)| (le, self.0.counts.get(i).copied().unwrap_or(0)))
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_ms, self.0.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Renders `s` in the Prometheus text format.
pub fn render(s: &StatusView) -> String {
    let mut reg = Registry::with_prefix("xnlb");
    reg.register(
        "packets",
        "Data-plane packets by verdict (all CPUs)",
        counters_by("verdict", &s.counters),
    );
    let members = Family::<Labels, Gauge>::default();
    for st in ["alive", "suspect", "dead", "left", "draining", "drained"] {
        let n = s.members.iter().filter(|m| m.state == st).count() as i64;
        members
            .get_or_create(&vec![("state".into(), st.into())])
            .set(n);
    }
    reg.register(
        "members",
        "Other members by state, as this node sees them",
        members,
    );
    let gauges: [(&str, &str, i64); 6] = [
        (
            "quorum",
            "1 while this node is in a quorum",
            s.quorum.has as i64,
        ),
        (
            "quorum_votes",
            "Voters this node hears, itself included",
            s.quorum.votes as i64,
        ),
        ("epoch", "Installed epoch of the bucket map", s.epoch as i64),
        (
            "converged",
            "1 when all live members agree and no handoff is open",
            s.converged as i64,
        ),
        (
            "buckets_owned",
            "Buckets this node owns",
            s.buckets.owned as i64,
        ),
        (
            "lease_remaining_ms",
            "Lease left before the data plane fences itself",
            s.lease_ms as i64,
        ),
    ];
    for (name, help, v) in gauges {
        let g = Gauge::<i64>::default();
        g.set(v);
        reg.register(name, help, g);
    }
    reg.register(
        "cluster_datagrams_dropped",
        "Cluster datagrams dropped, by reason (forged, replayed, malformed...)",
        counters_by("reason", &s.protocol_drops),
    );
    reg.register(
        "failover_repair_ms",
        "Failover time: failed member's silence to the new epoch installed here",
        RepairMetric(s.availability.repair_histogram.clone()),
    );
    let avail = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    avail.set(s.availability.availability);
    reg.register(
        "availability",
        "MTBF / (MTBF + MTTR) over the agent's lifetime",
        avail,
    );
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

/// Serves scrapes for as long as the agent runs, with the default
/// [`Limits`].
pub async fn serve(listener: TcpListener, commands: mpsc::Sender<Command>) {
    serve_with(listener, commands, Limits::default()).await
}

/// Serves scrapes: at most `limits.max_connections` at once (more are
/// closed at once), a client that does not send its request or take the
/// answer within `limits.idle_timeout` is dropped, and a failed `accept` is
/// logged and retried.
pub async fn serve_with(listener: TcpListener, commands: mpsc::Sender<Command>, limits: Limits) {
    let admission = Admission::new(limits.max_connections);
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_failed("metrics", e).await;
                continue;
            }
        };
        let Some(slot) = admission.admit() else {
            drop(stream);
            continue;
        };
        let commands = commands.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = [0u8; 1024];
            let n = match timeout(limits.idle_timeout, stream.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let (code, body) = if req.starts_with("GET /metrics") {
                match status_via(&commands).await {
                    Some(s) => ("200 OK", render(&s)),
                    None => ("503 Service Unavailable", "agent stopping\n".to_string()),
                }
            } else {
                ("404 Not Found", "try /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = timeout(limits.idle_timeout, stream.write_all(resp.as_bytes())).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failover_histogram_is_cumulative_over_every_repair() {
        let mut h = RepairHistogram::default();
        for i in 0..150 {
            h.observe(if i < 120 { 260.0 } else { 900.0 });
        }
        let json = serde_json::json!({
            "node_id": 1, "cluster": "c", "role": "active", "state": "active",
            "epoch": 1, "converged": true, "lease_ms": 100,
            "quorum": {"has": true, "votes": 3, "needed": 2, "voters": 3},
            "buckets": {"total": 4096, "owned": 1, "owned_ranges": []},
            "members": [], "counters": {}, "protocol_drops": {},
            "availability": {"failovers": 150, "availability": 1.0, "uptime_s": 1.0},
        });
        let mut s: StatusView = match serde_json::from_value(json) {
            Ok(s) => s,
            Err(e) => panic!("status fixture: {e}"),
        };
        s.availability.repair_histogram = h;
        let text = render(&s);
        for line in [
            "xnlb_failover_repair_ms_count 150",
            "xnlb_failover_repair_ms_bucket{le=\"200.0\"} 0",
            "xnlb_failover_repair_ms_bucket{le=\"300.0\"} 120",
            "xnlb_failover_repair_ms_bucket{le=\"750.0\"} 120",
            "xnlb_failover_repair_ms_bucket{le=\"1000.0\"} 150",
            "xnlb_failover_repair_ms_bucket{le=\"+Inf\"} 150",
            "# TYPE xnlb_failover_repair_ms histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
