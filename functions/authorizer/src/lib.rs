//! The authorizer: the key lifecycle of product.md §5, and the only writer of the Keys table.
//!
//! Contract: [`Authorizer::handle`] takes one JSON action and answers JSON.
//!
//! | action | request fields | answer |
//! |---|---|---|
//! | `put_project` | `project_id` | `{"project_id", "scram_iterations"}` (idempotent) |
//! | `create_key` | `project_id`, `name`, `kind`, `permitted`, `options` | `{"key_id", "key"}`: the only time the key is shown |
//! | `import_key` | the same plus `key` (32 to 512 printable ASCII characters) | `{"key_id"}` |
//! | `revoke_key`, `unrevoke_key` | `project_id`, `key_id` | `{"key_id", "is_active"}` |
//! | `delete_key` | `project_id`, `key_id` | `{"key_id", "deleted": true}` |
//! | `list_keys` | `project_id` | `{"project_id", "keys": [models]}`: no key, digest or verifier |
//!
//! - A refused request answers `{"error": {"code", "message", "path"?}}` with a code of
//!   [`ErrorCode`]; the message says what to change.
//! - A failure that is not the request's fault (storage throttled, down or misconfigured, a
//!   malformed item) is an `Err(`[`TransientError`]`)`, which the Lambda runtime reports as a
//!   function error so that the caller retries.
//! - Creating or importing a key in a project without a project item creates the project first.
//!   Only the model, the peppered digest and the SCRAM verifiers are stored; the plaintext key is
//!   never stored or logged.
//! - The model is validated: project id, kind, known permissions, an access key permitting
//!   something, options of the documented shape, and `options.writes.autofill` passing the event
//!   rules (product.md §4) by itself, since it is merged into every event the key writes.

use keen_aws::keys_table::{KeysTable, KeysTableError};
use keen_aws::secrets::Pepper;
use keen_shared::event;
use keen_shared::key::{
    KeyId, KeyKind, KeyModel, KeyOptions, Permission, SecretKey, StoredKey, generate_key,
};
use keen_shared::record::check_project_id;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// Longest accepted key name, in characters.
pub const MAX_NAME_LEN: usize = 256;
/// Largest accepted `options`, serialised: keeps a key item far below DynamoDB's 400 KB item
/// limit, so an oversized request is refused here rather than failing in storage.
pub const MAX_OPTIONS_BYTES: usize = 64 * 1024;
/// A new key id colliding with an existing one is a 2^-64 event; a few fresh draws settle it.
const KEY_ID_ATTEMPTS: usize = 3;

/// The codes a refused request answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not an object, an unknown action, a missing or mistyped field, a bad project or key id.
    InvalidRequest,
    /// The project has no project item (it never had `put_project` or a key).
    ProjectNotFound,
    /// No key with that id in that project.
    KeyNotFound,
    /// The imported key is already one of the project's keys.
    KeyExists,
    /// Kind, permissions, options or autofill are not acceptable.
    InvalidKeyModel,
    /// The imported key is too short, too long or has characters outside printable ASCII.
    InvalidKey,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::ProjectNotFound => "ProjectNotFound",
            ErrorCode::KeyNotFound => "KeyNotFound",
            ErrorCode::KeyExists => "KeyExists",
            ErrorCode::InvalidKeyModel => "InvalidKeyModel",
            ErrorCode::InvalidKey => "InvalidKey",
        }
    }
}

/// A failure that is not the request's fault: the storage is throttled, unavailable or
/// misconfigured, or holds a malformed item. The caller retries (an operator looks if it
/// persists: [`TransientError::is_retryable`] says which).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransientError(#[from] KeysTableError);

impl TransientError {
    /// Whether retrying may help by itself (throttling, timeouts, service-side failures).
    pub fn is_retryable(&self) -> bool {
        self.0.is_transient()
    }
}

impl From<TransientError> for lambda_runtime::Diagnostic {
    fn from(error: TransientError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: if error.is_retryable() {
                "StorageUnavailable".to_owned()
            } else {
                "StorageError".to_owned()
            },
            error_message: error.to_string(),
        }
    }
}

/// A refused request: the JSON error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    code: ErrorCode,
    message: String,
    path: Option<String>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            path: None,
        }
    }

    fn answer(&self) -> Value {
        let mut error = json!({"code": self.code.as_str(), "message": self.message});
        if let (Some(path), Some(object)) = (&self.path, error.as_object_mut()) {
            object.insert("path".to_owned(), json!(path));
        }
        json!({ "error": error })
    }
}

enum Failure {
    Refused(Refusal),
    Transient(TransientError),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Failure::Refused(refusal)
    }
}

impl From<KeysTableError> for Failure {
    fn from(error: KeysTableError) -> Self {
        match error {
            KeysTableError::KeyNotFound { project_id, key_id } => Failure::Refused(Refusal::new(
                ErrorCode::KeyNotFound,
                format!("project {project_id} has no key {key_id}; list_keys shows its keys"),
            )),
            other => Failure::Transient(TransientError(other)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectRequest {
    project_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    project_id: String,
    key_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyRequest {
    project_id: String,
    #[serde(default)]
    name: String,
    kind: String,
    #[serde(default)]
    permitted: Vec<String>,
    #[serde(default)]
    options: Value,
    /// Only for `import_key`. Never logged, never echoed.
    #[serde(default)]
    key: Option<String>,
}

/// The authorizer: the Keys table and the pepper digests are made under.
#[derive(Debug)]
pub struct Authorizer {
    keys: KeysTable,
    pepper: Pepper,
}

impl Authorizer {
    pub fn new(keys: KeysTable, pepper: Pepper) -> Self {
        Authorizer { keys, pepper }
    }

    pub fn keys(&self) -> &KeysTable {
        &self.keys
    }

    /// Answers one action (see the module docs).
    pub async fn handle(&self, request: Value) -> Result<Value, TransientError> {
        let action = request
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match self.dispatch(&action, request).await {
            Ok(answer) => Ok(answer),
            Err(Failure::Refused(refusal)) => {
                tracing::info!(action, code = refusal.code.as_str(), "request refused");
                Ok(refusal.answer())
            }
            Err(Failure::Transient(error)) => {
                tracing::error!(action, retryable = error.is_retryable(), %error, "storage failure");
                Err(error)
            }
        }
    }

    async fn dispatch(&self, action: &str, request: Value) -> Result<Value, Failure> {
        let Value::Object(mut fields) = request else {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                "the request must be a JSON object with an \"action\" field",
            )
            .into());
        };
        fields.remove("action");
        match action {
            "put_project" => self.put_project(parse(fields)?).await,
            "create_key" => self.create_key(parse(fields)?, false).await,
            "import_key" => self.create_key(parse(fields)?, true).await,
            "revoke_key" => self.set_active(parse(fields)?, false).await,
            "unrevoke_key" => self.set_active(parse(fields)?, true).await,
            "delete_key" => self.delete_key(parse(fields)?).await,
            "list_keys" => self.list_keys(parse(fields)?).await,
            "" => Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!("the request has no \"action\" string; {ACTIONS}"),
            )
            .into()),
            other => Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!("unknown action {other:?}; {ACTIONS}"),
            )
            .into()),
        }
    }

    async fn put_project(&self, request: ProjectRequest) -> Result<Value, Failure> {
        let project_id = project_id(request.project_id)?;
        let salt = self.keys.put_project(&project_id).await?;
        tracing::info!(project_id, "project put");
        Ok(json!({"project_id": project_id, "scram_iterations": salt.iterations()}))
    }

    async fn create_key(&self, request: NewKeyRequest, import: bool) -> Result<Value, Failure> {
        let secret = match (import, request.key.as_deref()) {
            (false, None) => generate_key(),
            (false, Some(_)) => {
                return Err(Refusal::new(
                    ErrorCode::InvalidRequest,
                    "create_key generates the key itself; to bring your own, use import_key",
                )
                .into());
            }
            (true, None) => {
                return Err(Refusal::new(
                    ErrorCode::InvalidRequest,
                    "import_key needs the \"key\" to import (at least 32 characters)",
                )
                .into());
            }
            (true, Some(key)) => SecretKey::import(key)
                .map_err(|error| Refusal::new(ErrorCode::InvalidKey, error.to_string()))?,
        };
        let mut model = key_model(request)?;
        let project_id = model.project_id.clone();

        let salt = match self.keys.get_project(&project_id).await? {
            Some(salt) => salt,
            None => self.keys.put_project(&project_id).await?,
        };
        if import {
            // Two keys with one secret would make PLAIN lookup ambiguous.
            let existing = self.keys.list_keys(&project_id).await?;
            let digest = keen_shared::key::key_digest(self.pepper.as_bytes(), secret.expose());
            if let Some(twin) = existing
                .iter()
                .find(|key| keen_shared::key::digest_matches(&key.digest, &digest))
            {
                return Err(Refusal::new(
                    ErrorCode::KeyExists,
                    format!(
                        "this key is already key {} of project {project_id}",
                        twin.model.key_id
                    ),
                )
                .into());
            }
        }
        for _ in 0..KEY_ID_ATTEMPTS {
            let stored = StoredKey::derive(model.clone(), &secret, self.pepper.as_bytes(), &salt);
            match self.keys.put_key(&stored).await {
                Ok(()) => {
                    let key_id = model.key_id.as_str();
                    tracing::info!(project_id, key_id, kind = ?model.kind, import, "key created");
                    return Ok(if import {
                        json!({"key_id": key_id})
                    } else {
                        json!({"key_id": key_id, "key": secret.expose()})
                    });
                }
                Err(KeysTableError::KeyExists { .. }) => model.key_id = KeyId::generate(),
                Err(error) => return Err(error.into()),
            }
        }
        Err(Failure::Transient(TransientError(
            KeysTableError::Unavailable {
                operation: "PutItem",
                message: format!("{KEY_ID_ATTEMPTS} fresh key ids all collided; retry"),
            },
        )))
    }

    async fn set_active(&self, request: KeyRequest, active: bool) -> Result<Value, Failure> {
        let (project_id, key_id) = key_ref(request)?;
        self.keys.set_active(&project_id, &key_id, active).await?;
        tracing::info!(
            project_id,
            key_id = key_id.as_str(),
            active,
            "key activity set"
        );
        Ok(json!({"key_id": key_id, "is_active": active}))
    }

    async fn delete_key(&self, request: KeyRequest) -> Result<Value, Failure> {
        let (project_id, key_id) = key_ref(request)?;
        self.keys.delete_key(&project_id, &key_id).await?;
        tracing::info!(project_id, key_id = key_id.as_str(), "key deleted");
        Ok(json!({"key_id": key_id, "deleted": true}))
    }

    async fn list_keys(&self, request: ProjectRequest) -> Result<Value, Failure> {
        let project_id = project_id(request.project_id)?;
        if self.keys.get_project(&project_id).await?.is_none() {
            return Err(Refusal::new(
                ErrorCode::ProjectNotFound,
                format!(
                    "project {project_id} does not exist; put_project or create_key creates it"
                ),
            )
            .into());
        }
        let keys: Vec<KeyModel> = self
            .keys
            .list_keys(&project_id)
            .await?
            .into_iter()
            .map(|stored| stored.model)
            .collect();
        Ok(json!({"project_id": project_id, "keys": keys}))
    }
}

const ACTIONS: &str = "the actions are put_project, create_key, import_key, revoke_key, \
                       unrevoke_key, delete_key and list_keys";

fn parse<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, Refusal> {
    serde_json::from_value(Value::Object(fields))
        .map_err(|error| Refusal::new(ErrorCode::InvalidRequest, error.to_string()))
}

fn project_id(project_id: String) -> Result<String, Refusal> {
    check_project_id(&project_id).map_err(|reason| {
        Refusal::new(
            ErrorCode::InvalidRequest,
            format!("invalid project_id: {reason}"),
        )
    })?;
    Ok(project_id)
}

fn key_ref(request: KeyRequest) -> Result<(String, KeyId), Refusal> {
    let project_id = project_id(request.project_id)?;
    let key_id = KeyId::parse(&request.key_id)
        .map_err(|error| Refusal::new(ErrorCode::InvalidRequest, error.to_string()))?;
    Ok((project_id, key_id))
}

/// The model of a new key, validated; a fresh key id.
fn key_model(request: NewKeyRequest) -> Result<KeyModel, Refusal> {
    let invalid = |message: String| Refusal::new(ErrorCode::InvalidKeyModel, message);
    let project_id = project_id(request.project_id)?;
    let name_length = request.name.chars().count();
    if name_length > MAX_NAME_LEN {
        return Err(invalid(format!(
            "the name is {name_length} characters long; the limit is {MAX_NAME_LEN}"
        )));
    }
    let kind: KeyKind =
        serde_json::from_value(Value::String(request.kind.clone())).map_err(|_| {
            invalid(format!(
                "unknown kind {:?}: the kinds are master, write, read and access",
                request.kind
            ))
        })?;
    let mut permitted: Vec<Permission> = Vec::new();
    for name in &request.permitted {
        let permission: Permission = name.parse().map_err(|error| invalid(format!("{error}")))?;
        if !permitted.contains(&permission) {
            permitted.push(permission);
        }
    }
    let options: KeyOptions = match request.options {
        Value::Null => KeyOptions::default(),
        Value::Object(_) => serde_json::from_value(request.options)
            .map_err(|error| invalid(format!("options: {error}")))?,
        other => {
            return Err(invalid(format!(
                "options must be a JSON object, not {}",
                event::json_type_name(&other)
            )));
        }
    };
    let size = serde_json::to_string(&options).map_or(usize::MAX, |text| text.len());
    if size > MAX_OPTIONS_BYTES {
        return Err(invalid(format!(
            "options are {size} bytes as JSON; the limit is {MAX_OPTIONS_BYTES}"
        )));
    }
    let model = KeyModel {
        key_id: KeyId::generate(),
        project_id,
        name: request.name,
        kind,
        permitted,
        is_active: true,
        options,
    };
    model
        .validate_shape()
        .map_err(|error| invalid(error.to_string()))?;
    if let Some(autofill) = model.autofill() {
        // The event rules, then the keen namespace rules (a bad `keen` in autofill would
        // otherwise dead-letter every event the key writes).
        let keen_check = |autofill: &serde_json::Map<String, serde_json::Value>| {
            let mut probe = autofill.clone();
            let identity = keen_shared::keen::RecordIdentity {
                id: keen_shared::keen::KeenId::for_position("autofill", 0, 0, 0),
                created_at_ms: 0,
            };
            keen_shared::keen::build(&mut probe, identity).map(|_| ())
        };
        event::validate(autofill, None)
            .and_then(|()| keen_check(autofill))
            .map_err(|rejection| Refusal {
                code: ErrorCode::InvalidKeyModel,
                message: format!(
                    "options.writes.autofill is merged into every event, so it must pass the event \
                 rules itself ({}): {}",
                    rejection.code.as_str(),
                    rejection.message
                ),
                // The rule's path is into the event; answer it as a path into the request.
                path: rejection.path.map(|path| {
                    format!(
                        "$.options.writes.autofill{}",
                        path.strip_prefix('$').unwrap_or(&path)
                    )
                }),
            })?;
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key(value: Value) -> Result<KeyModel, Refusal> {
        let request: NewKeyRequest = parse(value.as_object().cloned().unwrap_or_default())?;
        key_model(request)
    }

    #[test]
    fn models_are_validated() {
        let model = new_key(json!({
            "project_id": "p1", "name": "n", "kind": "access",
            "permitted": ["writes", "writes", "schema"],
            "options": {"writes": {"autofill": {"tenant": {"id": 7}}}}
        }))
        .expect("valid");
        assert_eq!(model.permitted, [Permission::Writes, Permission::Schema]);
        assert!(model.is_active);

        for (request, code, needle) in [
            (
                json!({"project_id": "p 1", "kind": "write"}),
                ErrorCode::InvalidRequest,
                "project_id",
            ),
            (
                json!({"project_id": "p1", "kind": "admin"}),
                ErrorCode::InvalidKeyModel,
                "kinds are",
            ),
            (
                json!({"project_id": "p1", "kind": "access"}),
                ErrorCode::InvalidKeyModel,
                "permits nothing",
            ),
            (
                json!({"project_id": "p1", "kind": "access", "permitted": ["write"]}),
                ErrorCode::InvalidKeyModel,
                "unknown permission `write`",
            ),
            (
                json!({"project_id": "p1", "kind": "write", "options": [1]}),
                ErrorCode::InvalidKeyModel,
                "JSON object",
            ),
            (
                json!({"project_id": "p1", "kind": "write", "options": {"writes": {"autofill": 3}}}),
                ErrorCode::InvalidKeyModel,
                "autofill must be a JSON object",
            ),
            (
                json!({"project_id": "p1", "kind": "write", "options": {"writes": {"autofill": {"a.b": 1}}}}),
                ErrorCode::InvalidKeyModel,
                "InvalidPropertyNameError",
            ),
            (
                json!({"project_id": "p1", "kind": "write", "name": "x".repeat(257)}),
                ErrorCode::InvalidKeyModel,
                "limit is 256",
            ),
            (
                json!({"project_id": "p1", "kind": "write", "permited": []}),
                ErrorCode::InvalidRequest,
                "unknown field",
            ),
            (
                json!({"kind": "write"}),
                ErrorCode::InvalidRequest,
                "project_id",
            ),
        ] {
            let refusal = new_key(request.clone()).expect_err("refused");
            assert_eq!(refusal.code, code, "{request}: {}", refusal.message);
            assert!(
                refusal.message.contains(needle),
                "{request}: {}",
                refusal.message
            );
        }
        let big = "x".repeat(9_000);
        let options: Map<String, Value> = (0..8).map(|i| (format!("k{i}"), json!(big))).collect();
        let refusal = new_key(json!({
            "project_id": "p1", "kind": "write",
            "options": {"writes": {"autofill": options}}
        }))
        .expect_err("too big");
        assert!(
            refusal.message.contains("limit is 65536"),
            "{}",
            refusal.message
        );
        assert!(new_key(json!({"project_id": "p1", "kind": "write", "options": {"writes": {"autofill": {}}}})).is_ok());
    }

    #[test]
    fn refusals_answer_code_message_and_path() {
        let refusal = new_key(json!({
            "project_id": "p1", "kind": "write",
            "options": {"writes": {"autofill": {"ok": {"$bad": 1}}}}
        }))
        .expect_err("refused");
        let answer = refusal.answer();
        assert_eq!(answer["error"]["code"], "InvalidKeyModel");
        assert_eq!(
            answer["error"]["path"], r#"$.options.writes.autofill.ok["$bad"]"#,
            "{answer}"
        );
        let plain = Refusal::new(ErrorCode::KeyNotFound, "gone").answer();
        assert_eq!(
            plain,
            json!({"error": {"code": "KeyNotFound", "message": "gone"}})
        );
    }
}
