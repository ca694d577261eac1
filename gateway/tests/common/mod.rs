//! The gateway's integration harness: a moto server with the tables of template.yaml, a tansu
//! broker with the inbound topic, projects with keys made through the authorizer, and gateway
//! processes (the real binary) on free ports.
#![allow(dead_code)]

use keen_authorizer::Authorizer;
use keen_aws::keys_table::KeysTable;
use keen_aws::secrets::Pepper;
use keen_testkit::kafka::TansuBroker;
use keen_testkit::process::ServerProcess;
use keen_testkit::{MotoServer, Provisioned, unique_prefix};
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

pub const INBOUND_TOPIC: &str = "keen-inbound";
pub const INBOUND_PARTITIONS: i32 = 8;
pub const PEPPER: &str = "test-pepper-0123456789abcdef0123456789";

/// Everything a gateway needs around it.
pub struct Stack {
    pub moto: MotoServer,
    pub provisioned: Provisioned,
    pub tansu: TansuBroker,
    pub authorizer: Authorizer,
}

/// A project and its keys (plaintext: tests are the client).
#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub write_key: String,
    pub write_key_id: String,
    pub read_key: String,
    pub read_key_id: String,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(TansuBroker::start()).await
    }

    /// With a broker the caller started (for example one advertising a proxy).
    pub async fn start_with(tansu: TansuBroker) -> Stack {
        let moto = MotoServer::start();
        let provisioned = moto.provisioned(&unique_prefix("gw")).await;
        tansu.create_topic(INBOUND_TOPIC, INBOUND_PARTITIONS as u32);
        let keys = KeysTable::new(provisioned.dynamodb.clone(), provisioned.name("KEYS_TABLE"));
        let authorizer = Authorizer::new(keys, Pepper::new(PEPPER.as_bytes()).expect("pepper"));
        Stack {
            moto,
            provisioned,
            tansu,
            authorizer,
        }
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

    /// A project with a write key and a read key.
    pub async fn project(&self, id: &str) -> Project {
        self.call(json!({"action": "put_project", "project_id": id}))
            .await;
        let write_key = format!("write-{id}-0123456789abcdef0123456789");
        let read_key = format!("read-{id}-0123456789abcdef01234567890");
        let write = self
            .call(json!({"action": "import_key", "project_id": id, "name": "writer", "kind": "write", "key": write_key}))
            .await;
        let read = self
            .call(json!({"action": "import_key", "project_id": id, "name": "reader", "kind": "read", "key": read_key}))
            .await;
        Project {
            id: id.to_owned(),
            write_key,
            write_key_id: write["key_id"].as_str().expect("key_id").to_owned(),
            read_key,
            read_key_id: read["key_id"].as_str().expect("key_id").to_owned(),
        }
    }

    pub async fn revoke(&self, project: &Project, key_id: &str) {
        self.call(json!({"action": "revoke_key", "project_id": project.id, "key_id": key_id}))
            .await;
    }

    /// The environment a gateway needs for this stack, on `listen`.
    pub fn gateway_env(&self, listen: SocketAddr, metrics: SocketAddr) -> Vec<(String, String)> {
        [
            ("GATEWAY_LISTEN", listen.to_string()),
            ("GATEWAY_METRICS_LISTEN", metrics.to_string()),
            ("BACKING_BOOTSTRAP", self.tansu.bootstrap()),
            ("INBOUND_TOPIC", INBOUND_TOPIC.to_owned()),
            ("KEYS_TABLE", self.provisioned.name("KEYS_TABLE").to_owned()),
            ("KEY_PEPPER", PEPPER.to_owned()),
            ("AWS_ENDPOINT_URL", self.moto.endpoint().to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts a gateway with the default configuration plus `extra` variables.
    /// `GATEWAY_LISTEN` and `GATEWAY_METRICS_LISTEN` in `extra` choose the addresses.
    pub fn gateway(&self, extra: &[(&str, &str)]) -> Gateway {
        let given = |name: &str| {
            extra
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.parse().expect("socket address"))
        };
        let listen = given("GATEWAY_LISTEN").unwrap_or_else(free_addr);
        let metrics = given("GATEWAY_METRICS_LISTEN").unwrap_or_else(free_addr);
        let mut env = self.gateway_env(listen, metrics);
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        Gateway::spawn(env, listen, metrics)
    }
}

/// A free 127.0.0.1 address (the port is released for the process that binds it next).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr")
}

/// A running `keen-gateway` process; killed on drop.
pub struct Gateway {
    process: ServerProcess,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
}

impl Gateway {
    fn spawn(env: Vec<(String, String)>, addr: SocketAddr, metrics: SocketAddr) -> Gateway {
        // The binary prints one line to stdout once it listens.
        let process = ServerProcess::start(
            "gateway",
            Path::new(env!("CARGO_BIN_EXE_keen-gateway")),
            &env,
            "listening",
            Duration::from_secs(30),
        );
        Gateway {
            process,
            addr,
            metrics,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Waits up to `timeout` for the process to exit on its own (after [`Gateway::signal_term`]);
    /// `None` if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        self.process.signal("TERM");
    }

    /// A `GET path` on the metrics port: the status code and the body.
    fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.metrics).expect("metrics port");
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .expect("write");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read");
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .to_owned();
        (status, body)
    }

    /// The Prometheus text of the metrics port.
    pub fn metrics_text(&self) -> String {
        self.get("/metrics").1
    }

    /// `GET /ready` on the metrics port: the status code and the body.
    pub fn ready(&self) -> (u16, String) {
        self.get("/ready")
    }

    /// The value of one metric line (`name{labels}`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The repository's Python venv.
pub fn python() -> PathBuf {
    keen_testkit::venv_python()
}

pub use keen_testkit::run_client;
