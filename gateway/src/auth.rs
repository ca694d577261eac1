//! SASL against the Keys table: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (architecture.md, "Keys
//! table"), with the credentials read through the shared `KeysReader` (at most 30 s old).
//!
//! Username = project id, password = any of the project's keys that may write. SCRAM uses the
//! project's one salt, tries every key's StoredKey and signs with the matched key's ServerKey; an
//! unknown project gets a salt derived from the pepper, so the exchange looks the same and
//! project ids cannot be enumerated. No password, key or proof is ever logged.

use keen_aws::keys_reader::{KeysReader, ProjectCredentials};
use keen_aws::keys_table::{KeysTable, KeysTableError};
use keen_aws::secrets::Pepper;
use keen_shared::key::{StoredKey, fake_salt_for_unknown_project, find_key_by_password};
use keen_shared::record::check_project_id;
use keen_shared::scram::{ClientFirst, ScramMechanism, ScramVerifier, ServerExchange, ServerNonce};
use quick_cache::sync::Cache;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The mechanisms offered, in SaslHandshake's answer.
pub const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-512", "SCRAM-SHA-256"];

/// The Keys table through the shared reader (`keen_aws::keys_reader`: credentials at most
/// [`keen_aws::keys_reader::KEYS_TTL`] old, unknown projects remembered apart), and the pepper.
pub struct Credentials {
    reader: KeysReader,
    pepper: Pepper,
}

impl Credentials {
    pub fn new(table: KeysTable, pepper: Pepper) -> Self {
        Credentials {
            reader: KeysReader::new(table),
            pepper,
        }
    }

    /// The project's credentials, `None` for a project without a salt item.
    pub async fn project(
        &self,
        project_id: &str,
    ) -> Result<Option<Arc<ProjectCredentials>>, KeysTableError> {
        self.reader.credentials(project_id).await
    }

    /// Whether `key_id` of `project_id` may still write, by credentials at most 30 s old.
    pub async fn still_writes(
        &self,
        project_id: &str,
        key_id: &str,
    ) -> Result<bool, KeysTableError> {
        Ok(self.project(project_id).await?.is_some_and(|project| {
            project
                .keys
                .iter()
                .any(|key| key.model.key_id.as_str() == key_id && key.model.may_write())
        }))
    }

    pub fn pepper(&self) -> &Pepper {
        &self.pepper
    }
}

/// A mechanism the client chose in SaslHandshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            other => ScramMechanism::from_name(other).ok().map(Mechanism::Scram),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
        }
    }
}

/// Who a connection authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub project_id: String,
    pub key_id: String,
}

/// Why authentication failed. The client is told only that it failed (not which part), so that
/// project ids cannot be probed; the reason goes to the log and metrics.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("malformed SASL message: {0}")]
    Malformed(String),
    #[error("unknown project")]
    UnknownProject,
    #[error("no key of the project matches")]
    WrongKey,
    #[error("the key is revoked or does not permit writes")]
    KeyMayNotWrite,
    #[error("the Keys table could not be read: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// Label for the authentication metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => "malformed",
            AuthError::UnknownProject => "unknown_project",
            AuthError::WrongKey => "wrong_key",
            AuthError::KeyMayNotWrite => "key_may_not_write",
            AuthError::Unavailable(_) => "unavailable",
        }
    }

    /// The message the client sees.
    pub fn client_message(&self) -> &'static str {
        match self {
            AuthError::Unavailable(_) => {
                "authentication could not be checked right now; retry shortly"
            }
            _ => {
                "authentication failed: the username must be a project id and the password a key \
                 of that project that is active and permits writes"
            }
        }
    }
}

/// What a SaslAuthenticate step produced.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes and wait for the next SaslAuthenticate.
    Continue(Vec<u8>, PendingScram),
    /// Authenticated: send these bytes (SCRAM's server-final-message, or nothing for PLAIN).
    Done(Principal, Vec<u8>),
}

/// A SCRAM exchange between its two client messages.
#[derive(Debug)]
pub struct PendingScram {
    exchange: ServerExchange,
    project: Option<Arc<ProjectCredentials>>,
}

/// PLAIN (RFC 4616): `authzid NUL authcid NUL password`.
pub async fn authenticate_plain(
    credentials: &Credentials,
    message: &[u8],
) -> Result<Principal, AuthError> {
    let text = std::str::from_utf8(message)
        .map_err(|_| AuthError::Malformed("PLAIN message is not UTF-8".into()))?;
    let mut parts = text.splitn(3, '\0');
    let (Some(authzid), Some(project_id), Some(password)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "PLAIN message must be authzid NUL username NUL password".into(),
        ));
    };
    if !authzid.is_empty() && authzid != project_id {
        return Err(AuthError::Malformed(
            "PLAIN authorization identity differs from the username".into(),
        ));
    }
    let project = lookup(credentials, project_id).await?;
    let Some(project) = project else {
        // Still compute a digest, so an unknown project costs the same time as a wrong key.
        let _ = find_key_by_password(credentials.pepper().as_bytes(), password, &[]);
        return Err(AuthError::UnknownProject);
    };
    let key = find_key_by_password(credentials.pepper().as_bytes(), password, &project.keys)
        .ok_or(AuthError::WrongKey)?;
    principal(project_id, key)
}

/// SCRAM's first step: answers the client-first-message with the server-first-message.
pub async fn scram_first(
    credentials: &Credentials,
    mechanism: ScramMechanism,
    message: &[u8],
) -> Result<Step, AuthError> {
    let text = std::str::from_utf8(message)
        .map_err(|_| AuthError::Malformed("SCRAM message is not UTF-8".into()))?;
    let client_first = ClientFirst::parse(text).map_err(|e| AuthError::Malformed(e.to_string()))?;
    let project_id = client_first.username().to_owned();
    let project = lookup(credentials, &project_id).await?;
    let salt = match &project {
        Some(project) => project.salt.clone(),
        None => fake_salt_for_unknown_project(credentials.pepper().as_bytes(), &project_id),
    };
    let (exchange, server_first) = ServerExchange::start(
        mechanism,
        client_first,
        salt.salt(),
        salt.iterations(),
        ServerNonce::generate(),
    )
    .map_err(|e| AuthError::Malformed(e.to_string()))?;
    Ok(Step::Continue(
        server_first.into_bytes(),
        PendingScram { exchange, project },
    ))
}

/// SCRAM's second step: checks the client proof against every key of the project.
pub fn scram_final(pending: PendingScram, message: &[u8]) -> Result<Step, AuthError> {
    let text = std::str::from_utf8(message)
        .map_err(|_| AuthError::Malformed("SCRAM message is not UTF-8".into()))?;
    let mechanism = pending.exchange.mechanism();
    let project_id = pending.exchange.username().to_owned();
    // A project that does not exist is checked against one stand-in, so its final step costs
    // what a one-key project's does and timing does not tell the two apart.
    let candidates: Vec<ScramVerifier> = match &pending.project {
        Some(project) => project
            .keys
            .iter()
            .map(|k| k.scram_verifier(mechanism).clone())
            .collect(),
        None => vec![ScramVerifier::unmatchable(mechanism)],
    };
    let (index, server_final) = match pending.exchange.finish(text, &candidates) {
        Ok(matched) => matched,
        Err(keen_shared::scram::ScramError::InvalidProof) => {
            return Err(if pending.project.is_some() {
                AuthError::WrongKey
            } else {
                AuthError::UnknownProject
            });
        }
        Err(other) => return Err(AuthError::Malformed(other.to_string())),
    };
    let key = pending
        .project
        .as_ref()
        .and_then(|p| p.keys.get(index))
        .ok_or(AuthError::WrongKey)?;
    let principal = principal(&project_id, key)?;
    Ok(Step::Done(principal, server_final.into_bytes()))
}

async fn lookup(
    credentials: &Credentials,
    project_id: &str,
) -> Result<Option<Arc<ProjectCredentials>>, AuthError> {
    if check_project_id(project_id).is_err() {
        return Ok(None);
    }
    credentials
        .project(project_id)
        .await
        .map_err(|e| AuthError::Unavailable(e.to_string()))
}

fn principal(project_id: &str, key: &StoredKey) -> Result<Principal, AuthError> {
    if !key.model.may_write() {
        return Err(AuthError::KeyMayNotWrite);
    }
    Ok(Principal {
        project_id: project_id.to_owned(),
        key_id: key.model.key_id.as_str().to_owned(),
    })
}

/// Failed authentications per source address: from the fourth failure within a minute, each
/// further failure is answered later and later (up to 5 s), which makes guessing slow without
/// locking a legitimate client out.
pub struct FailureTracker {
    recent: Cache<IpAddr, (Instant, u32)>,
}

impl Default for FailureTracker {
    fn default() -> Self {
        FailureTracker {
            recent: Cache::new(100_000),
        }
    }
}

impl FailureTracker {
    const WINDOW: Duration = Duration::from_secs(60);
    const FREE_FAILURES: u32 = 3;
    const MAX_DELAY: Duration = Duration::from_secs(5);

    /// Records a failure from `source` and returns how long to wait before answering it.
    pub fn failed(&self, source: IpAddr) -> Duration {
        let now = Instant::now();
        let (since, count) = match self.recent.get(&source) {
            Some((since, count)) if now.duration_since(since) < Self::WINDOW => (since, count + 1),
            _ => (now, 1),
        };
        self.recent.insert(source, (since, count));
        Self::delay_for(count)
    }

    /// The delay after the `count`th failure in a window.
    pub fn delay_for(count: u32) -> Duration {
        if count <= Self::FREE_FAILURES {
            return Duration::ZERO;
        }
        let exponent = (count - Self::FREE_FAILURES - 1).min(16);
        (Duration::from_millis(100) * 2u32.pow(exponent)).min(Self::MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_free_at_first_then_slower_up_to_a_cap() {
        assert_eq!(FailureTracker::delay_for(1), Duration::ZERO);
        assert_eq!(FailureTracker::delay_for(3), Duration::ZERO);
        assert_eq!(FailureTracker::delay_for(4), Duration::from_millis(100));
        assert_eq!(FailureTracker::delay_for(5), Duration::from_millis(200));
        assert_eq!(FailureTracker::delay_for(40), Duration::from_secs(5));
        let tracker = FailureTracker::default();
        let source: IpAddr = [10, 0, 0, 1].into();
        let delays: Vec<Duration> = (0..5).map(|_| tracker.failed(source)).collect();
        assert_eq!(delays[3], Duration::from_millis(100));
        assert_eq!(delays[4], Duration::from_millis(200));
        assert_eq!(tracker.failed([10, 0, 0, 2].into()), Duration::ZERO);
    }

    #[test]
    fn mechanisms_by_name() {
        assert_eq!(Mechanism::from_name("PLAIN"), Some(Mechanism::Plain));
        assert_eq!(
            Mechanism::from_name("SCRAM-SHA-512"),
            Some(Mechanism::Scram(ScramMechanism::Sha512))
        );
        assert_eq!(Mechanism::from_name("GSSAPI"), None);
        for name in MECHANISMS {
            assert_eq!(Mechanism::from_name(name).map(|m| m.name()), Some(name));
        }
    }
}
