//! Prometheus metrics, served as text on their own port (`GATEWAY_METRICS_LISTEN`): connections,
//! authentications by outcome, records and bytes accepted per project, throttling, refusals and
//! limits hit, and where a produce request's time goes — the backing-cluster latency among it.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Labels = Vec<(&'static str, String)>;

/// Every metric of the gateway.
pub struct Metrics {
    registry: Registry,
    pub connections_open: Gauge,
    pub connections_total: Counter,
    pub connections_refused: Family<Labels, Counter>,
    pub authentications: Family<Labels, Counter>,
    pub records_accepted: Family<Labels, Counter>,
    pub bytes_accepted: Family<Labels, Counter>,
    pub duplicates: Family<Labels, Counter>,
    pub produce_errors: Family<Labels, Counter>,
    pub refused_requests: Family<Labels, Counter>,
    pub throttle_seconds: Family<Labels, Counter<f64>>,
    pub produce_stages: ProduceStages,
    pub inflight_bytes: Gauge,
    pub malformed_frames: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keen_gateway");
        let metrics = Metrics {
            connections_open: Gauge::default(),
            connections_total: Counter::default(),
            connections_refused: Family::default(),
            authentications: Family::default(),
            records_accepted: Family::default(),
            bytes_accepted: Family::default(),
            duplicates: Family::default(),
            produce_errors: Family::default(),
            refused_requests: Family::default(),
            throttle_seconds: Family::default(),
            produce_stages: ProduceStages::default(),
            inflight_bytes: Gauge::default(),
            malformed_frames: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "produce_stage_seconds",
            "Where a produce request's time goes inside the gateway, by stage: scheduling (read \
             to handled), decoding (every partition's records), handing_over (records given to \
             the backing producer, per partition), acknowledgement (from then to the backing \
             cluster's last acknowledgement, per partition: the backing-cluster latency), \
             request (read to answer ready)",
            metrics.produce_stages.family.clone(),
        );
        registry.register(
            "connections_open",
            "Open client connections",
            metrics.connections_open.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted",
            metrics.connections_total.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once, by reason (connection limit, proxy header, TLS)",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "authentications",
            "SASL authentications by mechanism and outcome",
            metrics.authentications.clone(),
        );
        registry.register(
            "records_accepted",
            "Records acknowledged, per project",
            metrics.records_accepted.clone(),
        );
        registry.register(
            "bytes_accepted",
            "Record batch bytes acknowledged, per project",
            metrics.bytes_accepted.clone(),
        );
        registry.register(
            "duplicate_batches",
            "Idempotent resends answered without writing again, per project",
            metrics.duplicates.clone(),
        );
        registry.register(
            "produce_errors",
            "Partitions of produce requests answered with an error, by error",
            metrics.produce_errors.clone(),
        );
        registry.register(
            "refused_requests",
            "Requests refused by the produce-only contract, by API",
            metrics.refused_requests.clone(),
        );
        registry.register(
            "throttle_seconds",
            "Throttle time imposed by the produce quota, per project",
            metrics.throttle_seconds.clone(),
        );
        registry.register(
            "inflight_bytes",
            "Request bytes being processed",
            metrics.inflight_bytes.clone(),
        );
        registry.register(
            "malformed_frames",
            "Connections closed for a malformed, truncated or oversized frame",
            metrics.malformed_frames.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn label(name: &'static str, value: impl Into<String>) -> Labels {
        vec![(name, value.into())]
    }
}

/// The stages of a produce request inside the gateway: one histogram family, a handle per
/// stage taken once so that observing costs no label lookup.
pub struct ProduceStages {
    family: Family<Labels, Histogram, fn() -> Histogram>,
    pub scheduling: Histogram,
    pub decoding: Histogram,
    pub handing_over: Histogram,
    pub acknowledgement: Histogram,
    pub request: Histogram,
}

impl Default for ProduceStages {
    fn default() -> Self {
        // Fine below 10 ms, where the gateway's own share of a request lies.
        let family: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| {
                Histogram::new([
                    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005,
                    0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0, 5.0,
                ])
            });
        let stage = |name: &str| family.get_or_create(&Metrics::label("stage", name)).clone();
        ProduceStages {
            scheduling: stage("scheduling"),
            decoding: stage("decoding"),
            handing_over: stage("handing_over"),
            acknowledgement: stage("acknowledgement"),
            request: stage("request"),
            family,
        }
    }
}

/// What `GET /ready` asks: `Ok` when the gateway can take records, else why not.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serves `GET /ready` (readiness: the backing producer can take records; 503 with the reason
/// otherwise) and, on any other path, the metrics, on `listen` until the task is dropped.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Readiness,
) -> std::io::Result<()> {
    serve_on(TcpListener::bind(listen).await?, metrics, ready).await
}

/// [`serve`] on a listener bound already, so that the gateway announces readiness only once its
/// metrics can be scraped.
pub async fn serve_on(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Readiness,
) -> std::io::Result<()> {
    if let Ok(listen) = listener.local_addr() {
        tracing::info!(%listen, "metrics listening");
    }
    loop {
        let (mut stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            // Read the request head (bounded); its content does not matter.
            let mut head = [0u8; 4096];
            let mut read = 0;
            while read < head.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut head[read..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
                        read += n;
                        if head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let readiness = head[..read].starts_with(b"GET /ready ");
            let (status, content_type, body) = if readiness {
                match ready() {
                    Ok(()) => ("200 OK", "text/plain", "ready\n".to_owned()),
                    Err(reason) => (
                        "503 Service Unavailable",
                        "text/plain",
                        format!("not ready: {reason}\n"),
                    ),
                }
            } else {
                ("200 OK", "text/plain; version=0.0.4", metrics.render())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
