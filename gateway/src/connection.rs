//! One client connection: read frames, authenticate, dispatch by API key, answer in order.
//!
//! The reader handles requests one after another, but a Produce is handed to its own task, so a
//! client may pipeline; the writer sends the answers strictly in request order by awaiting each
//! request's answer slot in turn. Request bytes count against the connection's and the
//! instance's in-flight budgets from the moment their length is read until their answer is
//! ready: a slow backing cluster slows the acknowledgements and then the reading, never grows
//! memory.

use crate::Gateway;
use crate::api::allowed_before_authentication;
use crate::auth::{self, AuthError, Mechanism, PendingScram, Principal, Step};
use crate::decode::{DecodeError, decode_request_within};
use crate::handlers::{self, Broker};
use crate::metrics::Metrics;
use crate::wire::{self, RequestPrefix, WireError};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseHeader, ResponseKind, SaslAuthenticateResponse,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// What the writer does for one request, in order.
enum Reply {
    Frame(Bytes),
    /// Write the frame, then close (failed authentication, refused mechanism).
    FrameThenClose(Bytes),
    /// acks=0: nothing is written.
    Nothing,
    /// Close without answering (acks=0 with an error, as Kafka does).
    Close,
}

/// A reply and the in-flight budget it holds until written.
type Answer = (Reply, Option<Permits>);

/// An authenticated session.
#[derive(Debug, Clone)]
struct Session {
    principal: Principal,
    /// KIP-368 clients (SaslAuthenticate v1+) are told a lifetime and must re-authenticate by then.
    expires_at: Option<Instant>,
}

/// Where the SASL exchange stands.
enum Sasl {
    Idle,
    Handshaken(Mechanism),
    Scram(Mechanism, PendingScram),
}

/// The result of one SASL step.
enum SaslOutcome {
    /// Send these bytes and expect another step.
    Continue(Vec<u8>),
    /// Authenticated: send these bytes; the session lifetime in ms (0 = none announced).
    Done(Vec<u8>, i64),
    /// A step without a handshake first.
    IllegalState,
    Failed(AuthError),
}

/// Why the reader stopped: logged once per connection.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("client closed the connection")]
    Eof,
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{0}")]
    Protocol(String),
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for a request")]
    Timeout,
    #[error("authentication failed")]
    AuthFailed,
    /// A request that needs a session, on a connection without a valid one.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("shutting down")]
    Shutdown,
    #[error("answer queue closed")]
    WriterGone,
}

/// Serves one connection until it ends.
pub async fn serve<S>(gateway: Arc<Gateway>, stream: S, peer: SocketAddr, accepted: Instant)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    // Bounded: a client pipelining more requests than this waits for answers first.
    let (queue, answers) = mpsc::channel::<oneshot::Receiver<Answer>>(256);
    let writer_task = tokio::spawn(write_answers(writer, answers));
    let mut connection = Connection {
        per_connection: Arc::new(Semaphore::new(
            gateway.config.limits.max_inflight_bytes_per_connection,
        )),
        gateway,
        peer,
        session: None,
        sasl: Sasl::Idle,
        raw_sasl: false,
        queue,
        accepted,
        muted_until: Arc::default(),
        last_enqueued: None,
        turn: None,
    };
    let stop = connection.read_requests(&mut reader).await;
    match &stop {
        Stop::Eof | Stop::Shutdown | Stop::WriterGone => {
            tracing::debug!(%peer, reason = %stop, "connection ended")
        }
        Stop::Wire(_) | Stop::Protocol(_) => {
            connection.gateway.metrics.malformed_frames.inc();
            tracing::warn!(%peer, reason = %stop, "connection closed");
        }
        _ => tracing::info!(%peer, reason = %stop, "connection closed"),
    }
    // Dropping the queue lets the writer finish every answer already promised, then close.
    drop(connection);
    if let Ok(Some(mut writer)) = writer_task.await {
        // A refusal that ends the connection (failed authentication) is left for the client to
        // read before the gateway hangs up: a client that reads the answer and the end of the
        // stream in one go may drop the answer (kafka-python then reports a lost connection
        // instead of the authentication failure). Closed when the client hangs up, or after
        // CLOSE_LINGER.
        let mut sink = [0u8; 512];
        let drain = async { while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
        let _ = writer.shutdown().await;
    }
}

/// How long a connection ended by a refusal waits for the client to hang up first.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Writes the answers in order. Returns the writer, still open, when the last answer was a
/// refusal that closes the connection (the caller closes it after the client read it).
async fn write_answers<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut answers: mpsc::Receiver<oneshot::Receiver<Answer>>,
) -> Option<W> {
    // Each answer is one frame in one buffer: written and flushed as soon as it is its turn, so
    // an answer never waits behind a later request that is still in flight.
    while let Some(slot) = answers.recv().await {
        // The answer's budget is held until its frame is written: a client that stops reading
        // holds at most its in-flight budget in answers, never more.
        let (reply, _held) = slot.await.unwrap_or((Reply::Close, None));
        let (frame, close) = match reply {
            Reply::Frame(frame) => (Some(frame), false),
            Reply::FrameThenClose(frame) => (Some(frame), true),
            Reply::Nothing => (None, false),
            Reply::Close => (None, true),
        };
        if let Some(frame) = &frame
            && (writer.write_all(frame).await.is_err() || writer.flush().await.is_err())
        {
            break;
        }
        if close {
            if frame.is_some() {
                return Some(writer);
            }
            break;
        }
    }
    let _ = writer.shutdown().await;
    None
}

struct Connection {
    gateway: Arc<Gateway>,
    peer: SocketAddr,
    session: Option<Session>,
    sasl: Sasl,
    /// Set by SaslHandshake v0: the next frames are bare SASL tokens.
    raw_sasl: bool,
    queue: mpsc::Sender<oneshot::Receiver<Answer>>,
    per_connection: Arc<Semaphore>,
    /// When the TCP connection was accepted: authentication must finish within
    /// `GATEWAY_SASL_TIMEOUT_MS` of it.
    accepted: Instant,
    /// Quota: nothing more is read from the client before this instant.
    muted_until: Arc<std::sync::Mutex<Option<Instant>>>,
    /// Signalled once the last Produce read has handed its records to the producer: the next
    /// one waits for it, so pipelined produces keep their order per partition.
    last_enqueued: Option<oneshot::Receiver<()>>,
    /// Quota: the project's turn, taken before the Produce being read was read; its task lets
    /// it go once the request is charged in full.
    turn: Option<crate::quota::Turn>,
}

/// The in-flight budget a request holds until it is answered.
/// Both permits are released when it drops.
struct Permits {
    _connection: OwnedSemaphorePermit,
    _instance: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
    bytes: usize,
}

impl Drop for Permits {
    fn drop(&mut self) {
        self.metrics.inflight_bytes.dec_by(self.bytes as i64);
    }
}

impl Connection {
    async fn read_requests<R: AsyncRead + Unpin>(&mut self, mut reader: R) -> Stop {
        let mut shutdown = self.gateway.shutdown.subscribe();
        loop {
            if *shutdown.borrow_and_update() {
                return Stop::Shutdown;
            }
            // Quota: a produce that found its request over the project's rate paused the
            // connection; nothing more is read until then.
            let muted = self
                .muted_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .map(|until| until.saturating_duration_since(Instant::now()));
            if let Some(pause) = muted.filter(|p| !p.is_zero()) {
                tokio::select! {
                    _ = shutdown.changed() => return Stop::Shutdown,
                    _ = tokio::time::sleep(pause) => {}
                }
                self.extend_session(pause);
            }
            let gateway = self.gateway.clone();
            let limits = &gateway.config.limits;
            // Before authentication the deadline runs from accept, not per read: a client that
            // sends ApiVersions every few seconds does not keep a slot without ever logging in.
            let (limit, wait) = match self.session {
                None => (
                    limits.max_unauthenticated_request_bytes,
                    (self.accepted + limits.sasl_timeout).saturating_duration_since(Instant::now()),
                ),
                Some(_) => (limits.max_request_bytes, limits.idle_timeout),
            };
            let size = tokio::select! {
                _ = shutdown.changed() => return Stop::Shutdown,
                read = tokio::time::timeout(wait, reader.read_i32()) => match read {
                    Err(_) => return Stop::Timeout,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Stop::Eof,
                    Ok(Err(e)) => return Stop::Io(e),
                    Ok(Ok(size)) => size,
                },
            };
            let size = match wire::check_frame_size(size, limit) {
                Ok(size) => size,
                Err(e) => return Stop::Wire(e),
            };
            // Quota: a Produce (its API key, the frame's first two bytes) waits for its project's
            // turn before anything more of it is read, so a project's requests are read one at
            // a time, on whichever connection, and none while it is in deficit. Nothing is
            // reserved meanwhile; other requests (re-authentication) are not held.
            let mut head = [0u8; 2];
            let mut have = 0;
            if gateway.quota.is_on()
                && !self.raw_sasl
                && size >= head.len()
                && let Some(project_id) = self
                    .session
                    .as_ref()
                    .map(|s| s.principal.project_id.clone())
            {
                match tokio::time::timeout(limits.frame_timeout, reader.read_exact(&mut head)).await
                {
                    Err(_) => return Stop::Timeout,
                    Ok(Err(e)) => return Stop::Io(e),
                    Ok(Ok(_)) => have = head.len(),
                }
                if i16::from_be_bytes(head) == ApiKey::Produce as i16 {
                    let waiting = Instant::now();
                    self.turn = tokio::select! {
                        _ = shutdown.changed() => return Stop::Shutdown,
                        turn = gateway.quota.turn(&project_id) => turn,
                    };
                    self.extend_session(waiting.elapsed());
                }
            }
            let permits = match self.reserve(size).await {
                Some(permits) => permits,
                None => return Stop::Shutdown,
            };
            // The body must follow its length within the frame deadline: a client trickling
            // it holds its reservation that long at most.
            let body_wait = match self.session {
                None => wait,
                Some(_) => limits.frame_timeout,
            };
            let mut frame = BytesMut::zeroed(size);
            frame[..have].copy_from_slice(&head[..have]);
            match tokio::time::timeout(body_wait, reader.read_exact(&mut frame[have..])).await {
                Err(_) => return Stop::Timeout,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Stop::Protocol(format!("truncated frame: {size} bytes announced"));
                }
                Ok(Err(e)) => return Stop::Io(e),
                Ok(Ok(_)) => {}
            }
            let handled = self.handle(frame.freeze(), permits).await;
            // A turn not handed to a produce task (the frame was no valid Produce) ends here.
            self.turn = None;
            match handled {
                Ok(None) => {}
                Ok(Some(mute)) => {
                    // Quota: read nothing more from this client until its throttle time passed.
                    tokio::select! {
                        _ = shutdown.changed() => return Stop::Shutdown,
                        _ = tokio::time::sleep(mute) => {}
                    }
                }
                Err(stop) => return stop,
            }
        }
    }

    /// The time the gateway held this connection for the quota does not count against its
    /// KIP-368 session: a client that sent its requests in time, re-authentication included,
    /// is not cut off because we read them late.
    fn extend_session(&mut self, held: Duration) {
        if let Some(at) = self.session.as_mut().and_then(|s| s.expires_at.as_mut()) {
            *at += held;
        }
    }

    async fn reserve(&self, size: usize) -> Option<Permits> {
        let n = u32::try_from(size).ok()?;
        let own = self
            .per_connection
            .clone()
            .acquire_many_owned(n)
            .await
            .ok()?;
        let all = self
            .gateway
            .inflight
            .clone()
            .acquire_many_owned(n)
            .await
            .ok()?;
        self.gateway.metrics.inflight_bytes.inc_by(size as i64);
        Some(Permits {
            _connection: own,
            _instance: all,
            metrics: self.gateway.metrics.clone(),
            bytes: size,
        })
    }

    /// Handles one frame; `Ok(Some(d))` asks the reader to pause for `d` (quota).
    async fn handle(&mut self, frame: Bytes, permits: Permits) -> Result<Option<Duration>, Stop> {
        if self.raw_sasl {
            drop(permits);
            return self.raw_sasl(&frame).await.map(|_| None);
        }
        // Who may call what is decided on the prefix alone, before anything else is decoded.
        if let Some(prefix) = RequestPrefix::read(&frame)
            && let Ok(api) = ApiKey::try_from(prefix.api_key)
        {
            let authenticated = self
                .session
                .as_ref()
                .is_some_and(|s| s.expires_at.is_none_or(|at| Instant::now() < at));
            if !authenticated && !allowed_before_authentication(api) {
                let why = if self.session.is_some() {
                    "session expired without re-authentication"
                } else {
                    "request before authentication"
                };
                return Err(Stop::Unauthenticated(format!("{api:?}: {why}")));
            }
        }
        // The one decoding path, the same the fuzz target drives.
        let (prefix, api, request) =
            match decode_request_within(frame, self.gateway.config.limits.max_request_elements) {
                Ok(decoded) => (decoded.prefix, decoded.api, decoded.body),
                Err(DecodeError::UnsupportedVersion { prefix, api, .. })
                    if api == ApiKey::ApiVersions =>
                {
                    // KIP-511: answer in v0 with UNSUPPORTED_VERSION and our table; the client retries.
                    let body = ResponseKind::ApiVersions(handlers::api_versions(
                        ResponseError::UnsupportedVersion.code(),
                    ));
                    drop(permits);
                    return self
                        .answer(api, 0, prefix.correlation_id, &body)
                        .await
                        .map(|_| None);
                }
                Err(DecodeError::Wire(error)) => return Err(Stop::Wire(error)),
                Err(error) => return Err(Stop::Protocol(error.to_string())),
            };
        let version = prefix.api_version;
        let correlation_id = prefix.correlation_id;
        // A Produce hands its budget on to its answer; any other request gives its budget back
        // before its answer reserves one, so no reader waits for budget while holding some.
        let permits = match &request {
            Some(RequestKind::Produce(_)) => Some(permits),
            _ => {
                drop(permits);
                None
            }
        };
        match request {
            Some(RequestKind::ApiVersions(_)) => {
                let body = ResponseKind::ApiVersions(handlers::api_versions(0));
                self.answer(api, version, correlation_id, &body).await?;
            }
            Some(RequestKind::SaslHandshake(request)) => {
                self.sasl_handshake(version, correlation_id, request.mechanism.as_str())
                    .await?
            }
            Some(RequestKind::SaslAuthenticate(request)) => {
                self.sasl_authenticate(version, correlation_id, &request.auth_bytes)
                    .await?
            }
            Some(RequestKind::Metadata(request)) => {
                let broker = Broker {
                    node_id: self.gateway.config.node_id,
                    host: self.gateway.config.advertised.host.clone(),
                    port: self.gateway.config.advertised.port,
                    partitions: self.gateway.config.partitions,
                };
                let body = ResponseKind::Metadata(handlers::metadata(&broker, &request, version));
                self.answer(api, version, correlation_id, &body).await?;
            }
            Some(RequestKind::InitProducerId(request)) => {
                let response = handlers::init_producer_id(&request);
                if response.error_code != 0 {
                    self.count_refusal(api);
                }
                self.answer(
                    api,
                    version,
                    correlation_id,
                    &ResponseKind::InitProducerId(response),
                )
                .await?;
            }
            Some(RequestKind::Produce(request)) => {
                let Some(permits) = permits else {
                    return Err(Stop::Protocol("produce without its budget".into()));
                };
                return self
                    .produce(request, version, correlation_id, permits)
                    .await;
            }
            other => {
                let Some(body) = handlers::refusal(api, other) else {
                    return Err(Stop::Protocol(format!("{api:?} has no handler")));
                };
                self.count_refusal(api);
                self.answer(api, version, correlation_id, &body).await?;
            }
        }
        Ok(None)
    }

    fn count_refusal(&self, api: ApiKey) {
        self.gateway
            .metrics
            .refused_requests
            .get_or_create(&Metrics::label("api", format!("{api:?}")))
            .inc();
    }

    async fn produce(
        &mut self,
        request: kafka_protocol::messages::ProduceRequest,
        version: i16,
        correlation_id: i32,
        permits: Permits,
    ) -> Result<Option<Duration>, Stop> {
        let received = Instant::now();
        let Some(session) = self.session.clone() else {
            return Err(Stop::Protocol("produce before authentication".into()));
        };
        let principal = session.principal;
        // A key revoked after this connection authenticated stops here within the cache's 30 s,
        // also for clients that never re-authenticate (no KIP-368).
        match self
            .gateway
            .credentials
            .still_writes(&principal.project_id, &principal.key_id)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(peer = %self.peer, project_id = %principal.project_id, key_id = %principal.key_id, "key no longer writes: closing the connection");
                return Err(Stop::AuthFailed);
            }
            // The Keys table being unreachable does not stop produce: ingest checks every record.
            Err(error) => tracing::warn!(%error, "could not re-check the key; accepting"),
        }
        let acks = request.acks;
        let size = permits.bytes;
        // The wire bytes now, so a flood is paused before its next request is even read; the
        // produce task charges the rest of what the request decodes to.
        let throttle = self.gateway.quota.charge(&principal.project_id, size, 0);
        if !throttle.is_zero() {
            self.gateway
                .metrics
                .throttle_seconds
                .get_or_create(&Metrics::label("project_id", principal.project_id.clone()))
                .inc_by(throttle.as_secs_f64());
        }
        let owed = crate::produce::Throttle {
            charged_bytes: size,
            read_wait: throttle,
            muted_until: self.muted_until.clone(),
            turn: self.turn.take(),
        };
        // Decoded bytes are reserved here, in request order, before the task exists: a
        // request never waits for budget held by one read after it on this connection.
        let budget = self.gateway.config.limits.max_decompressed_bytes;
        let decoding = self
            .gateway
            .decoding
            .clone()
            .acquire_many_owned(u32::try_from(budget).unwrap_or(u32::MAX))
            .await
            .ok();
        let (enqueued, next) = oneshot::channel();
        let order = crate::produce::Order {
            previous: self.last_enqueued.replace(next),
            enqueued,
        };
        let (slot, answer) = oneshot::channel();
        self.queue
            .send(answer)
            .await
            .map_err(|_| Stop::WriterGone)?;
        let gateway = self.gateway.clone();
        tokio::spawn(async move {
            let (response, failed) = crate::produce::handle(
                &gateway, &principal, request, version, owed, order, decoding, received,
            )
            .await;
            let reply = if acks == 0 {
                if failed { Reply::Close } else { Reply::Nothing }
            } else {
                match encode(
                    ApiKey::Produce,
                    version,
                    correlation_id,
                    &ResponseKind::Produce(response),
                ) {
                    Ok(frame) => Reply::Frame(frame),
                    Err(error) => {
                        tracing::error!(%error, "could not encode a produce response");
                        Reply::Close
                    }
                }
            };
            let _ = slot.send((reply, Some(permits)));
        });
        Ok((!throttle.is_zero()).then_some(throttle))
    }

    async fn sasl_handshake(
        &mut self,
        version: i16,
        correlation_id: i32,
        mechanism: &str,
    ) -> Result<(), Stop> {
        let mechanisms = auth::MECHANISMS
            .iter()
            .map(|m| StrBytes::from_static_str(m))
            .collect();
        let mut response = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
        match Mechanism::from_name(mechanism) {
            Some(mechanism) => {
                self.sasl = Sasl::Handshaken(mechanism);
                self.raw_sasl = version == 0;
                self.answer(
                    ApiKey::SaslHandshake,
                    version,
                    correlation_id,
                    &ResponseKind::SaslHandshake(response),
                )
                .await
            }
            None => {
                response.error_code = ResponseError::UnsupportedSaslMechanism.code();
                let frame = encode(
                    ApiKey::SaslHandshake,
                    version,
                    correlation_id,
                    &ResponseKind::SaslHandshake(response),
                )
                .map_err(Stop::Protocol)?;
                self.push(Reply::FrameThenClose(frame)).await?;
                Err(Stop::Protocol(format!(
                    "unsupported SASL mechanism {mechanism:?}"
                )))
            }
        }
    }

    /// Runs one SASL step, whatever carries it (SaslAuthenticate, or a raw frame after a v0
    /// handshake). `lifetime` is announced to KIP-368 clients.
    async fn sasl_step(&mut self, auth_bytes: &[u8], kip368: bool) -> SaslOutcome {
        let attempted = match &self.sasl {
            Sasl::Handshaken(mechanism) | Sasl::Scram(mechanism, _) => mechanism.name(),
            Sasl::Idle => return SaslOutcome::IllegalState,
        };
        let step = match std::mem::replace(&mut self.sasl, Sasl::Idle) {
            Sasl::Idle => return SaslOutcome::IllegalState,
            Sasl::Handshaken(Mechanism::Plain) => {
                auth::authenticate_plain(&self.gateway.credentials, auth_bytes)
                    .await
                    .map(|principal| (Mechanism::Plain, Step::Done(principal, Vec::new())))
            }
            Sasl::Handshaken(mechanism @ Mechanism::Scram(scram)) => {
                auth::scram_first(&self.gateway.credentials, scram, auth_bytes)
                    .await
                    .map(|step| (mechanism, step))
            }
            Sasl::Scram(mechanism, pending) => {
                auth::scram_final(pending, auth_bytes).map(|step| (mechanism, step))
            }
        };
        let step = step.and_then(|(mechanism, step)| match (&self.session, &step) {
            // Re-authentication (KIP-368) must keep the project the connection started with.
            (Some(session), Step::Done(principal, _))
                if session.principal.project_id != principal.project_id =>
            {
                Err(AuthError::Malformed(
                    "re-authentication must use the same project".into(),
                ))
            }
            _ => Ok((mechanism, step)),
        });
        match step {
            Ok((mechanism, Step::Continue(bytes, pending))) => {
                self.sasl = Sasl::Scram(mechanism, pending);
                SaslOutcome::Continue(bytes)
            }
            Ok((mechanism, Step::Done(principal, bytes))) => {
                self.count_authentication(mechanism.name(), "success");
                let lifetime = self.gateway.config.session_lifetime;
                // Clients without KIP-368 cannot be told a lifetime: they are re-checked on
                // every produce instead.
                let expires_at = (kip368 && !lifetime.is_zero()).then(|| Instant::now() + lifetime);
                tracing::debug!(peer = %self.peer, project_id = %principal.project_id, key_id = %principal.key_id, mechanism = mechanism.name(), "authenticated");
                self.session = Some(Session {
                    principal,
                    expires_at,
                });
                let lifetime_ms = expires_at.map_or(0, |_| {
                    i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)
                });
                SaslOutcome::Done(bytes, lifetime_ms)
            }
            Err(error) => {
                self.count_authentication(attempted, error.outcome());
                tracing::info!(peer = %self.peer, reason = %error, "authentication failed");
                // Repeated failures from one source wait before they learn the outcome.
                let delay = self.gateway.failures.failed(self.peer.ip());
                tokio::time::sleep(delay).await;
                SaslOutcome::Failed(error)
            }
        }
    }

    async fn sasl_authenticate(
        &mut self,
        version: i16,
        correlation_id: i32,
        auth_bytes: &[u8],
    ) -> Result<(), Stop> {
        let (response, stop) = match self.sasl_step(auth_bytes, version >= 1).await {
            SaslOutcome::Continue(bytes) => (
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
                None,
            ),
            SaslOutcome::Done(bytes, lifetime_ms) => (
                SaslAuthenticateResponse::default()
                    .with_auth_bytes(Bytes::from(bytes))
                    .with_session_lifetime_ms(lifetime_ms),
                None,
            ),
            SaslOutcome::IllegalState => (
                SaslAuthenticateResponse::default()
                    .with_error_code(ResponseError::IllegalSaslState.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "SaslAuthenticate before SaslHandshake",
                    ))),
                Some(Stop::Protocol(
                    "SaslAuthenticate before SaslHandshake".into(),
                )),
            ),
            SaslOutcome::Failed(error) => (
                SaslAuthenticateResponse::default()
                    .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                    .with_error_message(Some(StrBytes::from_static_str(error.client_message()))),
                Some(Stop::AuthFailed),
            ),
        };
        let frame = encode(
            ApiKey::SaslAuthenticate,
            version,
            correlation_id,
            &ResponseKind::SaslAuthenticate(response),
        )
        .map_err(Stop::Protocol)?;
        match stop {
            None => self.push(Reply::Frame(frame)).await,
            Some(stop) => {
                // Failed authentication is answered, then the connection is closed.
                self.push(Reply::FrameThenClose(frame)).await?;
                Err(stop)
            }
        }
    }

    /// After SaslHandshake v0 the SASL tokens travel as bare length-prefixed frames (KIP-43);
    /// a failure closes the connection without an answer, as Kafka does.
    async fn raw_sasl(&mut self, token: &[u8]) -> Result<(), Stop> {
        let bytes = match self.sasl_step(token, false).await {
            SaslOutcome::Continue(bytes) => bytes,
            SaslOutcome::Done(bytes, _) => {
                self.raw_sasl = false;
                bytes
            }
            SaslOutcome::IllegalState => {
                return Err(Stop::Protocol("raw SASL token out of order".into()));
            }
            SaslOutcome::Failed(_) => return Err(Stop::AuthFailed),
        };
        let mut frame = BytesMut::with_capacity(4 + bytes.len());
        frame.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        frame.extend_from_slice(&bytes);
        self.push(Reply::Frame(frame.freeze())).await
    }

    fn count_authentication(&self, mechanism: &str, outcome: &str) {
        self.gateway
            .metrics
            .authentications
            .get_or_create(&vec![
                ("mechanism", mechanism.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    async fn answer(
        &self,
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &ResponseKind,
    ) -> Result<(), Stop> {
        let frame = encode(api, version, correlation_id, body).map_err(Stop::Protocol)?;
        self.push(Reply::Frame(frame)).await
    }

    async fn push(&self, reply: Reply) -> Result<(), Stop> {
        // An answer's bytes count against the in-flight budgets until written (a Metadata
        // answer can be far larger than its request).
        let held = match &reply {
            Reply::Frame(frame) | Reply::FrameThenClose(frame) => {
                let cap = self.gateway.config.limits.max_inflight_bytes_per_connection;
                Some(
                    self.reserve(frame.len().min(cap))
                        .await
                        .ok_or(Stop::Shutdown)?,
                )
            }
            Reply::Nothing | Reply::Close => None,
        };
        let (slot, answer) = oneshot::channel();
        let _ = slot.send((reply, held));
        self.queue.send(answer).await.map_err(|_| Stop::WriterGone)
    }
}

/// A response frame: length prefix, header at the API's response header version, body.
pub fn encode(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, String> {
    let mut frame = BytesMut::with_capacity(64);
    frame.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut frame, api.response_header_version(version))
        .map_err(|e| format!("{api:?} v{version} header: {e}"))?;
    body.encode(&mut frame, version)
        .map_err(|e| format!("{api:?} v{version} body: {e}"))?;
    let length = i32::try_from(frame.len() - 4).map_err(|_| "response too large".to_owned())?;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    Ok(frame.freeze())
}
