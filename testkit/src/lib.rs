//! Test support: a real moto server and a real dynalite per test, and clients and tables on them;
//! a real tansu Kafka broker per test and a fault-injecting Kafka proxy ([`kafka`]).
//!
//! Contract:
//! - [`MotoServer::start`] runs moto through `scripts/moto_server.py` (one request at a time, as
//!   DynamoDB is atomic per item; or the binary `$KEEN_MOTO_SERVER`) on a free
//!   127.0.0.1 port, returns once it answers HTTP, and kills it on drop. Tests never assume a
//!   fixed port (4566, 9092, 3000 belong to a developer's local stack).
//! - [`MotoServer::sdk_config`] is built from nothing in the process environment (no
//!   `AWS_ENDPOINT_URL`, profile or credentials leak in), since tests run in parallel next to a
//!   developer's shell settings.
//! - [`MotoServer::provisioned`] creates the tables and queue of `template.yaml` through the same
//!   code the local stack uses ([`keen_aws::provision`]); [`MotoServer::provisioned_with`] puts
//!   the tables on a [`DynaliteServer`] instead, as the local stack does.
//! - [`MotoServer::start_at`] and [`DynaliteServer::start_at`] keep their data in a file or
//!   directory, and `restart()` kills a server and starts it again on the same port and data, as
//!   a crash and a restart would.

pub mod kafka;
pub mod process;

pub use kafka::{
    BackingRecord, Fault, FaultProxy, Isolation, TansuBroker, read_topic, read_topic_blocking,
};

use aws_sdk_dynamodb::config::{Credentials, Region, SharedCredentialsProvider};
use keen_aws::provision::{DeploymentSpec, ProvisionedNames, provision};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Overrides the moto_server binary.
pub const MOTO_SERVER_ENV: &str = "KEEN_MOTO_SERVER";
/// The region every test client uses.
pub const REGION: &str = "us-east-1";
/// How long moto may take to answer after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at finding a port nobody grabs between our probe and moto's bind.
const START_ATTEMPTS: usize = 3;

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The Python of the repository's venv, where `scripts/setup-test-env` installs scramp and moto.
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-test-env first",
        python.display()
    );
    python
}

/// A name prefix unique within this machine's test runs: `{label}-{pid}-{n}-`.
pub fn unique_prefix(label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{label}-{}-{}-",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A moto server of this test's own.
#[derive(Debug)]
pub struct MotoServer {
    process: ServerProcess,
    /// The program and its arguments, before the host and port.
    command: Vec<PathBuf>,
}

/// Clients on a moto server and the resources of `template.yaml` created on it.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// Environment variable (`KEYS_TABLE`…) → table name or queue URL.
    pub names: ProvisionedNames,
}

impl Provisioned {
    /// The table name or queue URL under `env_var`.
    ///
    /// # Panics
    /// If template.yaml declares no such resource.
    pub fn name(&self, env_var: &str) -> &str {
        self.names
            .get(env_var)
            .unwrap_or_else(|| panic!("template.yaml provisions nothing for {env_var}"))
    }

    /// An environment holding every provisioned name (`KEYS_TABLE`…) and `extra`, as a
    /// function would read it: tests build each `Config` through its own reader.
    pub fn env(&self, extra: &[(&str, &str)]) -> keen_config::Env<'static> {
        let pairs: Vec<(String, String)> = self
            .names
            .iter()
            .chain(extra.iter().copied())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        keen_config::Env::from_pairs(pairs)
    }
}

impl MotoServer {
    /// Starts moto on a free port and waits until it answers.
    ///
    /// # Panics
    /// If the binary is missing (run `scripts/setup-test-env`) or moto does not answer within
    /// 10 seconds.
    pub fn start() -> Self {
        Self::start_at(None)
    }

    /// Starts moto keeping its queues in `state_file` (`scripts/moto_server.py --state-file`),
    /// so that a server started again on the same file finds them.
    ///
    /// # Panics
    /// As [`MotoServer::start`].
    pub fn start_at(state_file: Option<&Path>) -> Self {
        let mut command: Vec<PathBuf> = match std::env::var_os(MOTO_SERVER_ENV) {
            Some(binary) => vec![PathBuf::from(binary)],
            None => vec![venv_python(), repo_root().join("scripts/moto_server.py")],
        };
        assert!(
            command[0].exists(),
            "{} not found: run scripts/setup-test-env (it installs moto[server] into .venv), or \
             set {MOTO_SERVER_ENV} to a moto_server binary",
            command[0].display()
        );
        let binary = command[0].clone();
        if let Some(file) = state_file {
            command.extend([PathBuf::from("--state-file"), file.to_path_buf()]);
        }
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&command) {
                Ok(server) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "moto_server ({}) did not start: {}",
            binary.display(),
            failures.join("; ")
        );
    }

    fn try_start(command: &[PathBuf]) -> Result<Self, String> {
        let process = ServerProcess::start("moto", Self::command(command), "/moto-api/")?;
        Ok(MotoServer {
            process,
            command: command.to_vec(),
        })
    }

    fn command(command: &[PathBuf]) -> impl FnOnce(u16) -> Command + '_ {
        |port| {
            let mut moto = Command::new(&command[0]);
            moto.args(&command[1..])
                .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            moto
        }
    }

    /// Kills moto (as a crash would) and starts it again on its port: the queues are back when
    /// it was started with a state file ([`MotoServer::start_at`]), gone otherwise.
    ///
    /// # Panics
    /// If it does not start again.
    pub fn restart(&mut self) {
        let port = self.process.port;
        self.process.kill();
        self.process =
            ServerProcess::start_on("moto", port, Self::command(&self.command), "/moto-api/")
                .unwrap_or_else(|failure| panic!("moto did not restart: {failure}"));
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.process.endpoint
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// SDK configuration for this server: its endpoint, us-east-1, static test credentials, and
    /// nothing from the process environment.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(self.endpoint())
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config())
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config())
    }

    pub fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config())
    }

    /// Wipes every resource (`POST /moto-api/reset`).
    ///
    /// # Panics
    /// If moto does not answer 200.
    pub fn reset(&self) {
        match http_request(self.port(), "POST", "/moto-api/reset") {
            Ok(status) if status.contains(" 200") => {}
            other => panic!("resetting moto failed: {other:?}"),
        }
    }

    /// Creates the tables and queue of `template.yaml` named `{prefix}{LogicalId}`.
    ///
    /// # Panics
    /// If provisioning fails.
    pub async fn provisioned(&self, prefix: &str) -> Provisioned {
        Provisioned::create(self.dynamodb(), self.sqs(), prefix).await
    }

    /// As [`MotoServer::provisioned`], with the tables on `dynalite` and the queue here: the
    /// local stack's split (dynalite reads a partition, not the whole table).
    ///
    /// # Panics
    /// If provisioning fails.
    pub async fn provisioned_with(&self, dynalite: &DynaliteServer, prefix: &str) -> Provisioned {
        Provisioned::create(dynalite.dynamodb(), self.sqs(), prefix).await
    }
}

impl Provisioned {
    async fn create(
        dynamodb: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        prefix: &str,
    ) -> Provisioned {
        let spec = DeploymentSpec::deployment().expect("template.yaml parses");
        let names = provision(&dynamodb, &sqs, &spec, prefix)
            .await
            .unwrap_or_else(|error| panic!("provisioning failed: {error}"));
        Provisioned {
            dynamodb,
            sqs,
            names,
        }
    }
}

/// SDK configuration for any endpoint, with static test credentials and no environment input.
pub fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "keen-testkit",
        )))
        .build()
}

/// dynalite (npm, LevelDB underneath): a DynamoDB stand-in whose Query reads only the requested
/// partition's key range and which keeps DynamoDB's validation (25 writes a batch, 400 KB
/// items). It has no TimeToLive API: provisioning says so and goes on.
#[derive(Debug)]
pub struct DynaliteServer {
    process: ServerProcess,
    binary: PathBuf,
    /// Its data directory; in memory when `None`.
    path: Option<PathBuf>,
}

impl DynaliteServer {
    /// Starts dynalite on a free port, in memory, and waits until it answers.
    ///
    /// # Panics
    /// If it is not installed (run `scripts/setup-test-env`) or does not answer within 10 s.
    pub fn start() -> Self {
        Self::start_at(None)
    }

    /// Starts dynalite keeping its tables under `path` (LevelDB), so that a server started again
    /// on the same path finds them.
    ///
    /// # Panics
    /// As [`DynaliteServer::start`].
    pub fn start_at(path: Option<&Path>) -> Self {
        let binary = repo_root().join("tests/node/node_modules/.bin/dynalite");
        assert!(
            binary.exists(),
            "{} not found: run scripts/setup-test-env (it installs dynalite into tests/node)",
            binary.display()
        );
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&binary, path) {
                Ok(server) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("dynalite did not start: {}", failures.join("; "));
    }

    fn try_start(binary: &Path, path: Option<&Path>) -> Result<Self, String> {
        // Any HTTP answer (dynalite refuses a bare GET) means it listens.
        let process = ServerProcess::start("dynalite", Self::command(binary, path), "/")?;
        Ok(DynaliteServer {
            process,
            binary: binary.to_path_buf(),
            path: path.map(Path::to_path_buf),
        })
    }

    fn command<'a>(binary: &'a Path, path: Option<&'a Path>) -> impl FnOnce(u16) -> Command + 'a {
        move |port| {
            let mut dynalite = Command::new(binary);
            dynalite.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            // Tables become ACTIVE at once: the tests do not wait on real DynamoDB's timing.
            dynalite.args(["--createTableMs", "0", "--deleteTableMs", "0"]);
            dynalite.args(["--updateTableMs", "0"]);
            if let Some(path) = path {
                dynalite.arg("--path").arg(path);
            }
            dynalite
        }
    }

    /// Kills dynalite (SIGKILL, as a crash would) and starts it again on its port, so that
    /// clients made before keep working: on its data directory, its tables are back.
    ///
    /// # Panics
    /// If it does not start again.
    pub fn restart(&mut self) {
        let port = self.process.port;
        self.process.kill();
        let command = Self::command(&self.binary, self.path.as_deref());
        self.process = ServerProcess::start_on("dynalite", port, command, "/")
            .unwrap_or_else(|failure| panic!("dynalite did not restart: {failure}"));
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.process.endpoint
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// A DynamoDB client on this server (us-east-1, static test credentials).
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&sdk_config_for(self.endpoint()))
    }

    /// Stops the server at once (SIGKILL, as a crash would: LevelDB keeps what was
    /// acknowledged).
    pub fn stop(self) {
        drop(self);
    }
}

/// A local server process on a free port, logging to a file (an unread pipe would fill and
/// stall it); killed when dropped.
#[derive(Debug)]
struct ServerProcess {
    child: Child,
    port: u16,
    endpoint: String,
    log: PathBuf,
}

impl ServerProcess {
    /// Spawns the command `command(port)` builds on a free port, and waits until `GET
    /// ready_path` gets any HTTP answer; `name` names the server in errors and its log file.
    fn start(
        name: &str,
        command: impl FnOnce(u16) -> Command,
        ready_path: &str,
    ) -> Result<Self, String> {
        let port = free_port().map_err(|error| format!("no free port: {error}"))?;
        Self::start_on(name, port, command, ready_path)
    }

    /// As [`ServerProcess::start`], on `port`.
    fn start_on(
        name: &str,
        port: u16,
        command: impl FnOnce(u16) -> Command,
        ready_path: &str,
    ) -> Result<Self, String> {
        let log =
            std::env::temp_dir().join(format!("keen-{name}-{}-{port}.log", std::process::id()));
        let log_file = File::create(&log).map_err(|error| format!("{}: {error}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .map_err(|error| format!("{}: {error}", log.display()))?;
        let child = command(port)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|error| format!("spawning failed: {error}"))?;
        // On every error below, `server` is dropped, which kills the process.
        let mut server = ServerProcess {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if http_request(port, "GET", ready_path).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "exited with {status} on port {port}: {}",
                    server.log_tail()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no answer on port {port} within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    server.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if File::open(&self.log)
            .and_then(|mut file| file.read_to_string(&mut text))
            .is_err()
        {
            return format!("(no log at {})", self.log.display());
        }
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

impl ServerProcess {
    /// Kills the process (SIGKILL, as a crash would) and waits for it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The number of items in `table` (a paged Scan with `Select=COUNT`).
///
/// # Panics
/// If a Scan fails.
pub async fn count_items(client: &aws_sdk_dynamodb::Client, table: &str) -> i32 {
    let mut total = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        total += page.count;
        start = page.last_evaluated_key;
        if start.is_none() {
            return total;
        }
    }
}

/// A port that was free a moment ago (bind port 0, read it, let it go).
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

/// One tiny HTTP/1.1 exchange; returns the status line.
fn http_request(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or_default().to_owned();
    if status.starts_with("HTTP/1.") {
        Ok(status)
    } else {
        Err(std::io::Error::other(format!(
            "not an HTTP answer: {status:?}"
        )))
    }
}

/// A directory of this test's own under the system's temporary directory, removed with
/// everything in it when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `{tmp}/{label}-{pid}-{n}-`.
    ///
    /// # Panics
    /// If it cannot be created.
    pub fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_prefix(label));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("creating {}: {error}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs a Kafka client script of `gateway/tests/clients/` (Python or Node, by `program`) with one
/// JSON argument, from `tests/node` (where kafkajs is installed), and returns its JSON answer:
/// the last line of its stdout. Panics with both outputs when there is none.
pub fn run_client(program: &str, script: &str, argument: &serde_json::Value) -> serde_json::Value {
    let path = repo_root().join("gateway/tests/clients").join(script);
    // One argument may not pass 128 KiB (Linux's MAX_ARG_STRLEN): a larger one goes in a file,
    // passed as `@path` (confluent_produce.py reads it).
    let mut text = argument.to_string();
    let _file = (text.len() > 100_000).then(|| {
        let file = std::env::temp_dir().join(format!("{}.json", unique_prefix("client-args")));
        std::fs::write(&file, &text).expect("write the client's argument file");
        text = format!("@{}", file.display());
        TempFile(file)
    });
    let output = Command::new(program)
        .arg(&path)
        .arg(&text)
        .current_dir(repo_root().join("tests/node"))
        .output()
        .unwrap_or_else(|e| panic!("running {program} {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}); status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        )
    })
}
