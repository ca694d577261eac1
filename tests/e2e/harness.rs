//! The end-to-end harness: the whole local stack on free ports — a tansu broker, dynalite with
//! the tables of template.yaml and a moto server with its queue (as `scripts/dev` runs them),
//! gateway instances, the local event source mapping
//! (`keen-esm`) and the query API (`query`) — as the real binaries, each in its own process.
//!
//! The binaries come from the workspace's target directory, built once per test process with
//! `cargo build` (a no-op when the test run already built them), so a test never drives a stale
//! binary. Every process is killed when the stack is dropped; its log is printed when a test
//! fails.

use keen_authorizer::Authorizer;
use keen_aws::keys_table::KeysTable;
use keen_aws::secrets::Pepper;
use keen_testkit::kafka::TansuBroker;
use keen_testkit::process::ServerProcess;
use keen_testkit::{DynaliteServer, MotoServer, Provisioned, TempDir, unique_prefix};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The physical inbound topic.
pub const INBOUND_TOPIC: &str = "keen-inbound";
/// Its partitions.
pub const INBOUND_PARTITIONS: u32 = 4;
/// The key pepper of every test stack.
pub const PEPPER: &str = "e2e-pepper-0123456789abcdef0123456789";

/// The directory holding the workspace's debug binaries, after building them.
pub fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(keen_testkit::repo_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "keen-gateway",
                "-p",
                "keen-local",
                "-p",
                "keen-query",
                "-p",
                "keenctl",
            ])
            .status()
            .expect("running cargo build for the stack's binaries");
        assert!(
            status.success(),
            "cargo build of the stack's binaries failed"
        );
        // This test binary lives in <target>/debug/deps/.
        let exe = std::env::current_exe().expect("the test binary's path");
        exe.parent()
            .and_then(Path::parent)
            .expect("<target>/debug")
            .to_path_buf()
    })
}

/// A free 127.0.0.1 address (released for the process that binds it next).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr")
}

/// One process of the stack; killed on drop.
pub struct Service {
    process: ServerProcess,
    /// The address it serves, when it serves one.
    pub addr: Option<SocketAddr>,
}

impl Service {
    /// Spawns `binary` with exactly `env` (plus PATH) and waits until its first stdout line
    /// contains `ready`.
    fn spawn(name: &str, binary: &str, env: &[(String, String)], ready: &str) -> Service {
        Service {
            process: ServerProcess::start(
                name,
                &binaries().join(binary),
                env,
                ready,
                Duration::from_secs(60),
            ),
            addr: None,
        }
    }

    /// The process's log (stderr).
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Its pid, 0 once stopped.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `signal` (`TERM`, `KILL`) and waits for the exit; returns whether it exited 0.
    pub fn stop(&mut self, signal: &str) -> bool {
        self.process
            .stop(signal)
            .is_none_or(|status| status.success())
    }
}

/// A project and its keys (plaintext: the tests are the customer).
#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub master_key: String,
    pub write_key: String,
    pub write_key_id: String,
    pub read_key: String,
}

/// The whole local stack.
pub struct LocalStack {
    /// The queue (SQS).
    pub moto: MotoServer,
    /// The tables (DynamoDB).
    pub dynalite: DynaliteServer,
    pub provisioned: Provisioned,
    pub tansu: TansuBroker,
    authorizer: Authorizer,
    /// Gateway instances, in start order.
    pub gateways: Vec<Service>,
    /// The event source mapping, while it runs.
    pub esm: Option<Service>,
    /// The query API.
    pub query: Service,
    /// Where the servers keep their data, when they keep it ([`LocalStack::start_persistent`]).
    data: Option<TempDir>,
}

impl LocalStack {
    /// Broker, dynalite, moto, one gateway, the event source mapping and the query API, all in
    /// memory.
    pub async fn start() -> LocalStack {
        Self::start_on(None).await
    }

    /// As [`LocalStack::start`], with dynalite (LevelDB) and moto's queue keeping their data in
    /// a directory of their own, as `scripts/dev` runs them: they survive
    /// [`LocalStack::restart_storage`].
    pub async fn start_persistent() -> LocalStack {
        let data = TempDir::new("e2e-data");
        Self::start_on(Some(data)).await
    }

    async fn start_on(data: Option<TempDir>) -> LocalStack {
        let (tansu, dynalite, moto) = match &data {
            None => (
                TansuBroker::start(),
                DynaliteServer::start(),
                MotoServer::start(),
            ),
            Some(dir) => {
                let dir = dir.path();
                std::fs::create_dir_all(dir.join("dynamodb")).expect("dynamodb directory");
                (
                    TansuBroker::start(),
                    DynaliteServer::start_at(Some(&dir.join("dynamodb"))),
                    MotoServer::start_at(Some(&dir.join("sqs.pickle"))),
                )
            }
        };
        tansu.create_topic(INBOUND_TOPIC, INBOUND_PARTITIONS);
        let provisioned = moto
            .provisioned_with(&dynalite, &unique_prefix("e2e"))
            .await;
        let keys = KeysTable::new(provisioned.dynamodb.clone(), provisioned.name("KEYS_TABLE"));
        let authorizer = Authorizer::new(keys, Pepper::new(PEPPER.as_bytes()).expect("pepper"));
        let env = base_env(&moto, &dynalite, &provisioned, &tansu);
        let query_addr = free_addr();
        let mut query_env = env.clone();
        query_env.push(("QUERY_LISTEN".into(), query_addr.to_string()));
        let mut query = Service::spawn("query", "query", &query_env, "listening");
        query.addr = Some(query_addr);
        let mut stack = LocalStack {
            moto,
            dynalite,
            provisioned,
            tansu,
            authorizer,
            gateways: Vec::new(),
            esm: None,
            query,
            data,
        };
        stack.start_gateway(&[]);
        stack.start_esm(&[]);
        stack
    }

    /// Kills the stack's storage, dynalite and moto (SIGKILL, as a crash would), and starts
    /// them again on their data and ports while everything else runs on.
    ///
    /// # Panics
    /// If the stack was not started with [`LocalStack::start_persistent`].
    pub fn restart_storage(&mut self) {
        assert!(
            self.data.is_some(),
            "only a persistent stack survives a restart"
        );
        self.dynalite.restart();
        self.moto.restart();
    }

    fn env(&self) -> Vec<(String, String)> {
        base_env(&self.moto, &self.dynalite, &self.provisioned, &self.tansu)
    }

    /// Starts another gateway instance with `extra` variables; returns its address.
    pub fn start_gateway(&mut self, extra: &[(&str, &str)]) -> SocketAddr {
        let listen = free_addr();
        let mut env = self.env();
        env.push(("GATEWAY_LISTEN".into(), listen.to_string()));
        env.push(("GATEWAY_METRICS_LISTEN".into(), free_addr().to_string()));
        env.push(("GATEWAY_PARTITIONS".into(), "4".into()));
        override_env(&mut env, extra);
        let mut gateway = Service::spawn("gateway", "keen-gateway", &env, "listening");
        gateway.addr = Some(listen);
        self.gateways.push(gateway);
        listen
    }

    /// Starts the event source mapping (again) with `extra` variables.
    pub fn start_esm(&mut self, extra: &[(&str, &str)]) {
        assert!(self.esm.is_none(), "the event source mapping already runs");
        let mut env = self.env();
        env.push(("ESM_BATCH_WINDOW_MS".into(), "50".into()));
        override_env(&mut env, extra);
        self.esm = Some(Service::spawn("esm", "keen-esm", &env, "consuming"));
    }

    /// Stops the event source mapping with `signal`; returns whether it exited 0.
    pub fn stop_esm(&mut self, signal: &str) -> bool {
        let mut esm = self.esm.take().expect("the event source mapping runs");
        esm.stop(signal)
    }

    /// The first gateway's bootstrap address.
    pub fn bootstrap(&self) -> String {
        self.gateways[0].addr.expect("a gateway").to_string()
    }

    /// The environment `keenctl` needs against this stack.
    pub fn keenctl_env(&self) -> Vec<(String, String)> {
        self.env()
    }

    /// Runs `keenctl args…` against this stack; returns (exit code, stdout, stderr).
    pub fn keenctl(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(binaries().join("keenctl"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env())
            .args(args)
            .output()
            .expect("run keenctl");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn call(&self, request: Value) -> Value {
        let answer = self
            .authorizer
            .handle(request.clone())
            .await
            .expect("authorizer answers");
        assert!(answer.get("error").is_none(), "{request} → {answer}");
        answer
    }

    /// A project with master, write and read keys; `write_options` become the write key's
    /// options (autofill…).
    pub async fn project(&self, id: &str, write_options: Value) -> Project {
        self.call(json!({"action": "put_project", "project_id": id}))
            .await;
        let key = |kind: &str| format!("{kind}-{id}-0123456789abcdef0123456789");
        let import = |kind: &'static str, options: Value| {
            let key = key(kind);
            async move {
                self.call(
                    json!({"action": "import_key", "project_id": id, "name": kind,
                                 "kind": kind, "key": key, "options": options}),
                )
                .await
            }
        };
        import("master", json!({})).await;
        let write = import("write", write_options).await;
        import("read", json!({})).await;
        Project {
            id: id.to_owned(),
            master_key: key("master"),
            write_key: key("write"),
            write_key_id: write["key_id"].as_str().expect("key_id").to_owned(),
            read_key: key("read"),
        }
    }

    /// `GET path_and_query` on the query API with `key` in the Authorization header.
    pub fn get(&self, path_and_query: &str, key: &str) -> (u16, Value) {
        let addr = self.query.addr.expect("query address");
        let mut stream = TcpStream::connect(addr).expect("connect to the query API");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        write!(
            stream,
            "GET {path_and_query} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {key}\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        let body = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{path_and_query}: not JSON ({e}): {response}"));
        (status, body)
    }

    /// The count of `collection`, all time.
    pub fn count(&self, project: &Project, collection: &str) -> u64 {
        let (status, body) = self.get(
            &format!(
                "/3.0/projects/{}/queries/count?event_collection={collection}",
                project.id
            ),
            &project.read_key,
        );
        assert_eq!(status, 200, "{body}");
        body["result"].as_u64().expect("a count")
    }

    /// Waits until the count of `collection` reaches `expected` (and stays there a moment, so a
    /// count that would overshoot is seen); returns the final count.
    pub fn wait_count(
        &self,
        project: &Project,
        collection: &str,
        expected: u64,
        timeout: Duration,
    ) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.count(project, collection);
            if count >= expected || Instant::now() >= deadline {
                std::thread::sleep(Duration::from_millis(500));
                return self.count(project, collection);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every event of `collection`, oldest first.
    pub fn extraction(&self, project: &Project, collection: &str) -> Vec<Value> {
        let (status, body) = self.get(
            &format!(
                "/3.0/projects/{}/queries/extraction?event_collection={collection}",
                project.id
            ),
            &project.read_key,
        );
        assert_eq!(status, 200, "{body}");
        body["result"].as_array().expect("events").clone()
    }
}

fn base_env(
    moto: &MotoServer,
    dynalite: &DynaliteServer,
    provisioned: &Provisioned,
    tansu: &TansuBroker,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = provisioned
        .names
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    env.extend(
        [
            ("BACKING_BOOTSTRAP", tansu.bootstrap()),
            ("INBOUND_TOPIC", INBOUND_TOPIC.to_owned()),
            ("KEY_PEPPER", PEPPER.to_owned()),
            (
                "GEOIP_DATABASE",
                keen_testkit::repo_root()
                    .join(".test-data/GeoLite2-City-Test.mmdb")
                    .display()
                    .to_string(),
            ),
            ("AWS_ENDPOINT_URL", moto.endpoint().to_owned()),
            // DynamoDB only; the SDK reads it ahead of AWS_ENDPOINT_URL.
            ("AWS_ENDPOINT_URL_DYNAMODB", dynalite.endpoint().to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env
}

fn override_env(env: &mut Vec<(String, String)>, extra: &[(&str, &str)]) {
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
}

pub use keen_testkit::run_client;

/// The repository's Python.
pub fn python() -> String {
    keen_testkit::venv_python().display().to_string()
}
