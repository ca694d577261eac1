//! Listeners: plaintext or TLS (rustls, PEM certificate chain and key from files), optionally
//! behind a PROXY protocol v2 header, with a connection limit; and graceful shutdown.

use crate::Gateway;
use crate::metrics::Metrics;
use proxy_header::ParseConfig;
use proxy_header::io::ProxiedStream;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
}

/// Time a load balancer has to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads the TLS acceptor from PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ListenError> {
    let bad = |path: &Path, reason: String| ListenError::Certificate {
        path: path.display().to_string(),
        reason,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| bad(cert, e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let key_pem = std::fs::read(key).map_err(|e| bad(key, e.to_string()))?;
    let private_key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| bad(key, e.to_string()))?
        .ok_or_else(|| bad(key, "no private key in the file".into()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, private_key)
    .map_err(|e| bad(cert, e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds the client listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, source })
}

/// Accepts connections until shutdown is signalled, then stops accepting and returns once every
/// connection has finished (their in-flight produces answered) or the grace period ended.
pub async fn run(gateway: Arc<Gateway>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let connections = Arc::new(Semaphore::new(gateway.config.limits.max_connections));
    let sources = Arc::new(SourceConnections::default());
    let mut shutdown = gateway.shutdown.subscribe();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            gateway
                .metrics
                .connections_refused
                .get_or_create(&Metrics::label("reason", "connection_limit"))
                .inc();
            tracing::warn!(%peer, limit = gateway.config.limits.max_connections, "connection limit reached: closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let tls = tls.clone();
        let sources = sources.clone();
        tasks.spawn(async move {
            gateway.metrics.connections_total.inc();
            gateway.metrics.connections_open.inc();
            accept(gateway.clone(), stream, peer, tls, sources).await;
            gateway.metrics.connections_open.dec();
            drop(slot);
        });
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    tracing::info!(
        open = tasks.len(),
        "stopped accepting; finishing in-flight requests"
    );
    let grace = gateway.config.shutdown_grace;
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            left = tasks.len(),
            "grace period over; closing the remaining connections"
        );
        tasks.abort_all();
    }
}

async fn accept(
    gateway: Arc<Gateway>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    sources: Arc<SourceConnections>,
) {
    let accepted = Instant::now();
    let refuse = |reason: &'static str| {
        gateway
            .metrics
            .connections_refused
            .get_or_create(&Metrics::label("reason", reason))
            .inc();
    };
    if gateway.config.proxy_protocol {
        let proxied = tokio::time::timeout(
            PROXY_HEADER_TIMEOUT,
            ProxiedStream::create_from_tokio(stream, ParseConfig::default()),
        )
        .await;
        let proxied = match proxied {
            Ok(Ok(proxied)) => proxied,
            Ok(Err(error)) => {
                refuse("proxy_header");
                tracing::warn!(%peer, %error, "invalid PROXY protocol header: closing");
                return;
            }
            Err(_) => {
                refuse("proxy_header");
                tracing::warn!(%peer, "no PROXY protocol header in time: closing");
                return;
            }
        };
        // The client's own address, not the load balancer's (LOCAL health checks carry none).
        let source = proxied
            .proxy_header()
            .proxied_address()
            .map_or(peer, |address| address.source);
        let Some(_slot) = sources.take(
            source.ip(),
            gateway.config.limits.max_connections_per_source,
        ) else {
            refuse("source_limit");
            tracing::warn!(%source, limit = gateway.config.limits.max_connections_per_source, "connections per source address reached: closing");
            return;
        };
        serve_maybe_tls(gateway, proxied, source, tls, accepted).await;
    } else {
        let Some(_slot) = sources.take(peer.ip(), gateway.config.limits.max_connections_per_source)
        else {
            refuse("source_limit");
            tracing::warn!(%peer, limit = gateway.config.limits.max_connections_per_source, "connections per source address reached: closing");
            return;
        };
        serve_maybe_tls(gateway, stream, peer, tls, accepted).await;
    }
}

/// Open connections per source address (the PROXY header's client address behind a load
/// balancer), so that one source cannot take every slot of `GATEWAY_MAX_CONNECTIONS`.
#[derive(Default)]
pub struct SourceConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its source's count, given back when it drops.
pub struct SourceSlot {
    sources: Arc<SourceConnections>,
    source: IpAddr,
}

impl SourceConnections {
    /// A slot for one more connection from `source`, if it has fewer than `limit` open.
    pub fn take(self: &Arc<Self>, source: IpAddr, limit: usize) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(source).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: self.clone(),
            source,
        })
    }

    #[cfg(test)]
    fn open_from(&self, source: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&source).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self
            .sources
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The entry goes when its last connection does: the map holds open sources only.
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

async fn serve_maybe_tls<S>(
    gateway: Arc<Gateway>,
    stream: S,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    accepted: Instant,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match tls {
        None => crate::connection::serve(gateway, stream, peer, accepted).await,
        Some(acceptor) => {
            // The handshake counts against the time a client has to authenticate.
            let left = (accepted + gateway.config.limits.sasl_timeout)
                .saturating_duration_since(Instant::now());
            let handshake = tokio::time::timeout(left, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(tls_stream)) => {
                    crate::connection::serve(gateway, tls_stream, peer, accepted).await
                }
                Ok(Err(error)) => {
                    gateway
                        .metrics
                        .connections_refused
                        .get_or_create(&Metrics::label("reason", "tls_handshake"))
                        .inc();
                    tracing::info!(%peer, %error, "TLS handshake failed");
                }
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_gets_its_own_share_and_gets_it_back() {
        let sources = Arc::new(SourceConnections::default());
        let attacker: IpAddr = [10, 0, 0, 9].into();
        let honest: IpAddr = [10, 0, 0, 1].into();
        let held: Vec<SourceSlot> = (0..3).filter_map(|_| sources.take(attacker, 3)).collect();
        assert_eq!(held.len(), 3);
        assert!(sources.take(attacker, 3).is_none());
        assert!(sources.take(honest, 3).is_some());
        drop(held);
        assert_eq!(sources.open_from(attacker), 0);
        assert!(sources.open.lock().expect("lock").is_empty());
        assert!(sources.take(attacker, 3).is_some());
    }
}
