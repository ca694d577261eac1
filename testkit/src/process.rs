//! A server binary of the workspace run as a real process for a test: started with exactly the
//! environment the test gives it (plus `PATH`, so nothing of a developer's shell leaks in), ready
//! once its first line on stdout says so, its stderr in a log file that a failing test prints.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One running server; killed on drop, its log printed if the test is failing.
pub struct ServerProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ServerProcess {
    /// Spawns `binary` with `env` and waits up to `timeout` for its first stdout line to contain
    /// `ready` (the workspace's servers print one such line once they listen). Panics with the
    /// log when it does not come.
    pub fn start(
        name: &str,
        binary: &Path,
        env: &[(String, String)],
        ready: &str,
        timeout: Duration,
    ) -> ServerProcess {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "keen-{name}-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = ready_tx.send(line);
            }
            // Keep draining: a full pipe would block the server.
            for _ in lines {}
        });
        let process = ServerProcess {
            name: name.to_owned(),
            child: Some(child),
            log,
        };
        match ready_rx.recv_timeout(timeout) {
            Ok(line) if line.contains(ready) => process,
            other => panic!(
                "{name} did not start ({other:?}); log:\n{}",
                process.log_text()
            ),
        }
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its pid; 0 once it has exited.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` (`TERM`, `KILL`…) without waiting.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
    }

    /// Waits up to `timeout` for it to exit; `None` if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` and waits for the exit; panics with the log if it ignores it for a minute.
    /// `None` if it had exited already.
    pub fn stop(&mut self, signal: &str) -> Option<ExitStatus> {
        self.child.as_ref()?;
        self.signal(signal);
        let status = self.wait_exit(Duration::from_secs(60));
        assert!(
            status.is_some(),
            "{} ignored SIG{signal}; log:\n{}",
            self.name,
            self.log_text()
        );
        status
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_text()
            );
        }
    }
}
