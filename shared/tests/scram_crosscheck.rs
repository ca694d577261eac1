//! Cross-checks `keen_shared::scram` against an independent SCRAM implementation, PyPI `scramp`,
//! driven through `scripts/scram_crosscheck.py`: the verifiers must be byte-identical, and a
//! scramp client must authenticate against our server state machine (and accept its signature)
//! with a right key and be refused with a wrong one, for SCRAM-SHA-256 and SCRAM-SHA-512.
//!
//! Python is `$KEEN_PYTHON`, else `<workspace>/.venv/bin/python`. Without it or without scramp
//! the tests fail (they are never skipped): run `scripts/setup-test-env`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keen_shared::key::{
    KeyId, KeyKind, KeyModel, KeyOptions, ProjectSalt, SecretKey, StoredKey, generate_key,
};
use keen_shared::scram::{
    ClientFirst, ScramError, ScramMechanism, ScramVerifier, ServerExchange, ServerNonce,
};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

const PEPPER: &[u8] = b"cross-check pepper";
const PROJECT_ID: &str = "4f1c9a3be6d2a1b07c3e5f11";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python with scramp, checked once; a missing one fails the test with what to do.
fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let python = std::env::var_os("KEEN_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
        let check = Command::new(&python).args(["-c", "import scramp"]).output();
        match check {
            Ok(output) if output.status.success() => python,
            Ok(output) => panic!(
                "{} cannot import scramp ({}): run scripts/setup-test-env, or point \
                 KEEN_PYTHON at a Python that has scramp",
                python.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => panic!(
                "cannot run {} ({error}): run scripts/setup-test-env to create the test \
                 virtualenv, or point KEEN_PYTHON at a Python that has scramp",
                python.display()
            ),
        }
    })
}

fn crosscheck_script(args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("scripts/scram_crosscheck.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[test]
fn verifiers_match_scramp() {
    let generated = generate_key();
    let cases = [
        (
            "pencil",
            BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64"),
            4096,
        ),
        (
            generated.expose(),
            ProjectSalt::generate().salt().to_vec(),
            4096,
        ),
        (
            "!\"#$%&'()*+,-./0123456789:;<=>?@[\\]^_`{|}~imported",
            b"a 16-byte salt..".to_vec(),
            10_000,
        ),
        ("short", vec![0xff; 32], 4097),
    ];
    let mut requests = Vec::new();
    let mut ours = Vec::new();
    for mechanism in ScramMechanism::ALL {
        for (password, salt, iterations) in &cases {
            requests.push(json!({
                "mechanism": mechanism.name(),
                "password": password,
                "salt": BASE64.encode(salt),
                "iterations": iterations,
            }));
            let verifier = ScramVerifier::derive(mechanism, password, salt, *iterations);
            ours.push(serde_json::to_value(verifier).expect("a verifier serialises"));
        }
    }

    let mut child = crosscheck_script(&["verifiers"])
        .spawn()
        .expect("the cross-check script starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(Value::Array(requests).to_string().as_bytes())
        .expect("the script reads its cases");
    drop(stdin);
    let output = child.wait_with_output().expect("the script finishes");
    assert!(
        output.status.success(),
        "scram_crosscheck.py verifiers failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: Vec<Value> =
        serde_json::from_slice(&output.stdout).expect("the script prints JSON");

    assert_eq!(theirs.len(), ours.len());
    for (index, (theirs, ours)) in theirs.iter().zip(&ours).enumerate() {
        let mechanism = ScramMechanism::ALL[index / cases.len()];
        assert_eq!(theirs, ours, "{mechanism}, case {}", index % cases.len());
    }
}

/// A scramp `ScramClient` in a child process, one SCRAM message per line.
struct ScrampClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ScrampClient {
    fn start(mechanism: ScramMechanism, username: &str, password: &str) -> Self {
        let mut child = crosscheck_script(&["client", mechanism.name(), username, password])
            .spawn()
            .expect("the cross-check script starts");
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        ScrampClient {
            child,
            stdin,
            stdout,
        }
    }

    fn receive(&mut self) -> String {
        let mut line = String::new();
        let read = self
            .stdout
            .read_line(&mut line)
            .expect("the script's output is readable");
        if read == 0 {
            let mut stderr = String::new();
            if let Some(mut pipe) = self.child.stderr.take() {
                pipe.read_to_string(&mut stderr)
                    .expect("the script's errors are readable");
            }
            panic!("scram_crosscheck.py client stopped early: {stderr}");
        }
        line.trim_end_matches('\n').to_owned()
    }

    fn send(&mut self, message: &str) {
        writeln!(self.stdin, "{message}").expect("the script reads the server's message");
        self.stdin
            .flush()
            .expect("the script reads the server's message");
    }

    fn finish(mut self) {
        let status = self.child.wait().expect("the script exits");
        assert!(
            status.success(),
            "scram_crosscheck.py client exited with {status}"
        );
    }
}

fn stored_key(secret: &SecretKey, salt: &ProjectSalt) -> StoredKey {
    let model = KeyModel {
        key_id: KeyId::generate(),
        project_id: PROJECT_ID.into(),
        name: "cross-check".into(),
        kind: KeyKind::Write,
        permitted: Vec::new(),
        is_active: true,
        options: KeyOptions::default(),
    };
    StoredKey::derive(model, secret, PEPPER, salt)
}

/// Runs one exchange: scramp as the client with `password`, our state machine as the server
/// with the verifiers of `keys`. Returns what the server decided and what the client said last.
fn exchange(
    mechanism: ScramMechanism,
    username: &str,
    password: &str,
    salt: &ProjectSalt,
    keys: &[StoredKey],
) -> (Result<usize, ScramError>, String) {
    let mut client = ScrampClient::start(mechanism, username, password);

    let client_first =
        ClientFirst::parse(&client.receive()).expect("scramp's client-first-message parses");
    assert_eq!(client_first.username(), username);
    let (server, server_first) = ServerExchange::start(
        mechanism,
        client_first,
        salt.salt(),
        salt.iterations(),
        ServerNonce::generate(),
    )
    .expect("a project salt is acceptable");
    client.send(&server_first);

    let candidates: Vec<ScramVerifier> = keys
        .iter()
        .map(|key| key.scram_verifier(mechanism).clone())
        .collect();
    let decision = match server.finish(&client.receive(), &candidates) {
        Ok((index, server_final)) => {
            client.send(&server_final);
            Ok(index)
        }
        Err(error) => {
            client.send(&error.server_final_message());
            Err(error)
        }
    };
    let verdict = client.receive();
    client.finish();
    (decision, verdict)
}

#[test]
fn a_scramp_client_authenticates_with_any_key_of_the_project() {
    let salt = ProjectSalt::generate();
    let secrets: Vec<SecretKey> = (0..3).map(|_| generate_key()).collect();
    let keys: Vec<StoredKey> = secrets
        .iter()
        .map(|secret| stored_key(secret, &salt))
        .collect();
    for mechanism in ScramMechanism::ALL {
        // The second key: the server must try more than the first candidate, and sign with the
        // matched key's ServerKey, or scramp refuses the server-final-message.
        let (decision, verdict) =
            exchange(mechanism, PROJECT_ID, secrets[1].expose(), &salt, &keys);
        assert_eq!(decision, Ok(1), "{mechanism}");
        assert_eq!(
            verdict, "ok",
            "{mechanism}: scramp refused our server signature"
        );
    }
}

#[test]
fn usernames_with_escaped_characters_interoperate() {
    let salt = ProjectSalt::generate();
    let secret =
        SecretKey::import("an-imported-key-with-32-characters!").expect("a valid imported key");
    let keys = [stored_key(&secret, &salt)];
    for mechanism in ScramMechanism::ALL {
        let (decision, verdict) =
            exchange(mechanism, "odd,user=name", secret.expose(), &salt, &keys);
        assert_eq!((decision, verdict.as_str()), (Ok(0), "ok"), "{mechanism}");
    }
}

#[test]
fn a_scramp_client_with_a_wrong_key_is_refused() {
    let salt = ProjectSalt::generate();
    let keys: Vec<StoredKey> = (0..2).map(|_| stored_key(&generate_key(), &salt)).collect();
    let stranger = generate_key();
    for mechanism in ScramMechanism::ALL {
        let (decision, verdict) = exchange(mechanism, PROJECT_ID, stranger.expose(), &salt, &keys);
        assert_eq!(decision, Err(ScramError::InvalidProof), "{mechanism}");
        assert!(
            verdict.starts_with("refused:"),
            "{mechanism}: scramp said {verdict:?}"
        );
        assert!(
            verdict.contains("invalid-proof"),
            "{mechanism}: scramp said {verdict:?}"
        );
    }
}
