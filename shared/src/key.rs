//! Keys (product.md §5): the key model, key generation and import, and what the Keys table holds
//! for a key so that it can be checked but never recovered.
//!
//! Contract:
//! - [`KeyModel`] is a key's metadata (kind, `permitted`, `is_active`, options) and is stored and
//!   cached as JSON; [`KeyModel::permits`] decides what a key may do.
//! - A key's plaintext exists only as a [`SecretKey`], whose `Debug` and `Display` redact it. What
//!   is stored is a [`StoredKey`]: the model, an HMAC-SHA-256 digest of the key under the
//!   server-side pepper (PLAIN lookup, [`find_key_by_password`]), and the SCRAM-SHA-256 and
//!   SCRAM-SHA-512 verifiers under the project's one [`ProjectSalt`].
//! - Digest comparisons are constant time and a lookup compares against every key of the project.
//! - Keys are printable ASCII, so SCRAM's SASLprep leaves them unchanged (see [`crate::scram`]).

use crate::scram::{self, ScramMechanism, ScramVerifier};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::fmt;
use std::str::FromStr;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// What a key is (product.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Everything.
    Master,
    /// Writes only.
    Write,
    /// Queries only.
    Read,
    /// Exactly what its `permitted` list says.
    Access,
}

/// One thing a key may be permitted to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Permission {
    Writes,
    Queries,
    SavedQueries,
    CachedQueries,
    Datasets,
    Schema,
}

impl Permission {
    /// Every permission, in the order product.md lists them.
    pub const ALL: [Permission; 6] = [
        Permission::Writes,
        Permission::Queries,
        Permission::SavedQueries,
        Permission::CachedQueries,
        Permission::Datasets,
        Permission::Schema,
    ];

    /// The name used in `permitted` lists.
    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::Writes => "writes",
            Permission::Queries => "queries",
            Permission::SavedQueries => "saved_queries",
            Permission::CachedQueries => "cached_queries",
            Permission::Datasets => "datasets",
            Permission::Schema => "schema",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = KeyModelError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|permission| permission.as_str() == name)
            .ok_or_else(|| KeyModelError::UnknownPermission {
                name: name.to_owned(),
            })
    }
}

impl TryFrom<String> for Permission {
    type Error = KeyModelError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

/// Why a key, key id, imported key or project salt is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyModelError {
    #[error(
        "unknown permission `{name}`: the permissions are writes, queries, saved_queries, \
         cached_queries, datasets and schema"
    )]
    UnknownPermission { name: String },
    #[error(
        "access key {key_id} permits nothing: give it a non-empty `permitted` list, \
         such as [\"writes\"]"
    )]
    AccessKeyPermitsNothing { key_id: KeyId },
    #[error("options.writes.autofill must be a JSON object, not {found}")]
    AutofillNotObject { found: &'static str },
    #[error(
        "invalid key id: a key id is exactly 16 characters, each 0-9 or a-f \
         (this one has {length} characters)"
    )]
    InvalidKeyId { length: usize },
    #[error("an imported key must be at least 32 characters long; this one has {length}")]
    KeyTooShort { length: usize },
    #[error("an imported key must be at most 512 characters long; this one has {length}")]
    KeyTooLong { length: usize },
    #[error(
        "an imported key may contain only printable ASCII characters other than space \
         (`!` to `~`), so that every SCRAM client sends it unchanged"
    )]
    KeyCharacters,
    #[error("a project salt must be at least 16 bytes long; this one has {length}")]
    SaltTooShort { length: usize },
    #[error("iteration count {iterations} is below the minimum of 4096 (RFC 7677)")]
    IterationsTooLow { iterations: u32 },
}

/// A key's id: 16 random lowercase hex characters, never derived from the key (architecture.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// A fresh random id (64 bits).
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn generate() -> Self {
        KeyId(hex::encode(scram::random_bytes::<8>()))
    }

    /// Accepts exactly 16 lowercase hex characters.
    pub fn parse(text: &str) -> Result<Self, KeyModelError> {
        let valid = text.len() == 16
            && text
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(KeyId(text.to_owned()))
        } else {
            Err(KeyModelError::InvalidKeyId {
                length: text.chars().count(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for KeyId {
    type Err = KeyModelError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        KeyId::parse(text)
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeyModelError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        KeyId::parse(&text)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> Self {
        id.0
    }
}

/// A key's metadata, as stored (without any secret) and cached as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyModel {
    pub key_id: KeyId,
    pub project_id: String,
    #[serde(default)]
    pub name: String,
    pub kind: KeyKind,
    /// Meaningful for access keys only: the other kinds are defined by their kind.
    #[serde(default)]
    pub permitted: Vec<Permission>,
    /// False once revoked.
    pub is_active: bool,
    #[serde(default)]
    pub options: KeyOptions,
}

impl KeyModel {
    /// Whether the key's kind (and, for access keys, its `permitted` list) allows `permission`.
    ///
    /// Master permits everything and access keys exactly their list; write and read keys permit
    /// only `writes` and only `queries`, and their `permitted` list is ignored, since the kind is
    /// what the customer chose when creating them. Revocation is not considered here: see
    /// [`KeyModel::may_write`].
    pub fn permits(&self, permission: Permission) -> bool {
        match self.kind {
            KeyKind::Master => true,
            KeyKind::Write => permission == Permission::Writes,
            KeyKind::Read => permission == Permission::Queries,
            KeyKind::Access => self.permitted.contains(&permission),
        }
    }

    /// Whether a record produced with this key may be stored now: active and permitting writes.
    pub fn may_write(&self) -> bool {
        self.is_active && self.permits(Permission::Writes)
    }

    /// `options.writes.autofill`, merged into every event written with this key.
    pub fn autofill(&self) -> Option<&Map<String, Value>> {
        self.options.writes.as_ref()?.autofill.as_ref()
    }

    /// Checks what the types alone cannot. Unknown permissions and a non-object autofill are
    /// already refused when deserializing, with [`KeyModelError`]'s messages; whether autofill
    /// passes the event rules is checked where those rules live.
    pub fn validate_shape(&self) -> Result<(), KeyModelError> {
        if self.kind == KeyKind::Access && self.permitted.is_empty() {
            return Err(KeyModelError::AccessKeyPermitsNothing {
                key_id: self.key_id.clone(),
            });
        }
        Ok(())
    }
}

/// A key's options. Sections this service does not use (saved_queries, cached_queries,
/// datasets…) are kept as they came, so that storing a key never loses them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<WritesOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<QueriesOptions>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WritesOptions {
    /// Deep-merged into every event written with the key; autofill wins conflicts (product.md §5).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "deserialize_autofill"
    )]
    pub autofill: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueriesOptions {
    /// ANDed onto every query made with the key (product.md §9).
    #[serde(default)]
    pub filters: Vec<Value>,
}

fn deserialize_autofill<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    use serde::de::Error as _;
    // `null` means no autofill, as an absent field does.
    let found = match Value::deserialize(deserializer)? {
        Value::Null => return Ok(None),
        Value::Object(map) => return Ok(Some(map)),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
    };
    Err(D::Error::custom(KeyModelError::AutofillNotObject { found }))
}

/// A key in plaintext: generated (shown once) or imported. `Debug` and `Display` redact it.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    pub const MIN_IMPORTED_LENGTH: usize = 32;
    pub const MAX_IMPORTED_LENGTH: usize = 512;

    /// Accepts a customer's own key: 32 to 512 printable ASCII characters other than space.
    ///
    /// Outside ASCII, SCRAM clients apply SASLprep, which may change the bytes they hash; the
    /// service does not implement SASLprep, so such keys are refused rather than half-working.
    pub fn import(text: &str) -> Result<Self, KeyModelError> {
        let length = text.chars().count();
        if length < Self::MIN_IMPORTED_LENGTH {
            return Err(KeyModelError::KeyTooShort { length });
        }
        if length > Self::MAX_IMPORTED_LENGTH {
            return Err(KeyModelError::KeyTooLong { length });
        }
        if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(KeyModelError::KeyCharacters);
        }
        Ok(SecretKey(text.to_owned()))
    }

    /// The plaintext, for showing it to the customer once and for deriving verifiers.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A new key: 256 random bits as 64 lowercase hex characters.
///
/// # Panics
/// If the operating system's random number generator fails.
pub fn generate_key() -> SecretKey {
    SecretKey(hex::encode(scram::random_bytes::<32>()))
}

/// HMAC-SHA-256 of the key under the pepper: what the Keys table holds for PLAIN lookup.
pub fn key_digest(pepper: &[u8], key: &str) -> [u8; 32] {
    hmac_sha256(pepper, key.as_bytes())
}

/// [`key_digest`] as 64 lowercase hex characters.
pub fn key_digest_hex(pepper: &[u8], key: &str) -> String {
    hex::encode(key_digest(pepper, key))
}

/// Compares two digests in constant time.
pub fn digest_matches(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
        .expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// What the Keys table holds for one key: no plaintext, only what checks it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    pub model: KeyModel,
    /// [`key_digest`] of the key.
    #[serde(with = "hex_digest")]
    pub digest: [u8; 32],
    pub scram_sha256: ScramVerifier,
    pub scram_sha512: ScramVerifier,
}

impl StoredKey {
    /// Everything the table needs for `secret`, under the project's salt.
    pub fn derive(
        model: KeyModel,
        secret: &SecretKey,
        pepper: &[u8],
        project_salt: &ProjectSalt,
    ) -> Self {
        let verifier = |mechanism| {
            ScramVerifier::derive(
                mechanism,
                secret.expose(),
                project_salt.salt(),
                project_salt.iterations(),
            )
        };
        StoredKey {
            model,
            digest: key_digest(pepper, secret.expose()),
            scram_sha256: verifier(ScramMechanism::Sha256),
            scram_sha512: verifier(ScramMechanism::Sha512),
        }
    }

    /// The verifier for one SCRAM mechanism.
    pub fn scram_verifier(&self, mechanism: ScramMechanism) -> &ScramVerifier {
        match mechanism {
            ScramMechanism::Sha256 => &self.scram_sha256,
            ScramMechanism::Sha512 => &self.scram_sha512,
        }
    }
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("model", &self.model)
            .field("digest", &"<redacted>")
            .field("scram_sha256", &self.scram_sha256)
            .field("scram_sha512", &self.scram_sha512)
            .finish()
    }
}

/// A key as a password check sees it: the model and the peppered digest, without the SCRAM
/// verifiers. The query API reads keys only this far
/// (`keen_aws::keys_table::KeysTable::list_digested_keys`); its role may not read more.
#[derive(Clone, PartialEq)]
pub struct DigestedKey {
    pub model: KeyModel,
    /// [`key_digest`] of the key.
    pub digest: [u8; 32],
}

impl fmt::Debug for DigestedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestedKey")
            .field("model", &self.model)
            .field("digest", &"<redacted>")
            .finish()
    }
}

/// PLAIN authentication: the key among `keys` (one project's) whose digest matches `password`.
///
/// The digest is compared with every key's, in constant time and without stopping at a match, so
/// the timing says nothing about which key matched. Whether the key is active and permits writes
/// is the caller's next check ([`KeyModel::may_write`]).
pub fn find_key_by_password<'a>(
    pepper: &[u8],
    password: &str,
    keys: &'a [StoredKey],
) -> Option<&'a StoredKey> {
    find_by_digest(pepper, password, keys, |key| &key.digest)
}

/// [`find_key_by_password`] over keys read without their verifiers.
pub fn find_digested_key_by_password<'a>(
    pepper: &[u8],
    password: &str,
    keys: &'a [DigestedKey],
) -> Option<&'a DigestedKey> {
    find_by_digest(pepper, password, keys, |key| &key.digest)
}

fn find_by_digest<'a, K>(
    pepper: &[u8],
    password: &str,
    keys: &'a [K],
    digest_of: impl Fn(&K) -> &[u8; 32],
) -> Option<&'a K> {
    let digest = key_digest(pepper, password);
    let mut found = Choice::from(0);
    let mut found_index = 0u64;
    for (index, key) in keys.iter().enumerate() {
        let matched = digest.ct_eq(digest_of(key));
        found_index.conditional_assign(&(index as u64), matched & !found);
        found |= matched;
    }
    if bool::from(found) {
        keys.get(found_index as usize)
    } else {
        None
    }
}

/// A project's SCRAM salt and iteration count, shared by all its keys so that one SCRAM username
/// (the project id) can have several passwords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ProjectSaltFields")]
pub struct ProjectSalt {
    #[serde(with = "scram::base64_bytes")]
    salt: Vec<u8>,
    iterations: u32,
}

/// The serialized form, checked by [`ProjectSalt::new`] on the way in.
#[derive(Deserialize)]
struct ProjectSaltFields {
    #[serde(with = "scram::base64_bytes")]
    salt: Vec<u8>,
    iterations: u32,
}

impl TryFrom<ProjectSaltFields> for ProjectSalt {
    type Error = KeyModelError;

    fn try_from(fields: ProjectSaltFields) -> Result<Self, Self::Error> {
        ProjectSalt::new(fields.salt, fields.iterations)
    }
}

impl ProjectSalt {
    /// Length of generated salts (RFC 5802 leaves it open; 192 bits).
    pub const GENERATED_LENGTH: usize = 24;
    /// At least 128 bits, as NIST SP 800-132 asks of PBKDF2 salts.
    pub const MIN_LENGTH: usize = 16;
    pub const DEFAULT_ITERATIONS: u32 = scram::MIN_ITERATIONS;

    /// Refuses salts shorter than 16 bytes and fewer than 4096 iterations.
    pub fn new(salt: Vec<u8>, iterations: u32) -> Result<Self, KeyModelError> {
        if salt.len() < Self::MIN_LENGTH {
            return Err(KeyModelError::SaltTooShort { length: salt.len() });
        }
        if iterations < scram::MIN_ITERATIONS {
            return Err(KeyModelError::IterationsTooLow { iterations });
        }
        Ok(ProjectSalt { salt, iterations })
    }

    /// A fresh random salt with the default iteration count.
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn generate() -> Self {
        let salt = scram::random_bytes::<{ Self::GENERATED_LENGTH }>();
        ProjectSalt {
            salt: salt.to_vec(),
            iterations: Self::DEFAULT_ITERATIONS,
        }
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }
}

/// The salt the gateway announces for a project that does not exist: derived from the pepper,
/// so it is stable across attempts and instances and looks like a real one, and project ids
/// cannot be enumerated through SCRAM.
pub fn fake_salt_for_unknown_project(pepper: &[u8], project_id: &str) -> ProjectSalt {
    let digest = hmac_sha256(pepper, format!("fake-salt\n{project_id}").as_bytes());
    ProjectSalt {
        salt: digest[..ProjectSalt::GENERATED_LENGTH].to_vec(),
        iterations: ProjectSalt::DEFAULT_ITERATIONS,
    }
}

/// Serde of a 32-byte digest as 64 hex characters.
mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(
        digest: &[u8; 32],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(digest))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut digest = [0; 32];
        hex::decode_to_slice(text, &mut digest)
            .map_err(|_| D::Error::custom("expected a digest of 64 hexadecimal characters"))?;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PEPPER: &[u8] = b"a server-side pepper for tests";

    fn model(kind: KeyKind, permitted: &[Permission]) -> KeyModel {
        KeyModel {
            key_id: KeyId::generate(),
            project_id: "4f1c9a3be6d2a1b07c3e5f11".into(),
            name: "test".into(),
            kind,
            permitted: permitted.to_vec(),
            is_active: true,
            options: KeyOptions::default(),
        }
    }

    #[test]
    fn permissions_parse_and_unknown_ones_are_named_with_the_valid_ones() {
        for permission in Permission::ALL {
            assert_eq!(permission.as_str().parse(), Ok(permission));
            assert_eq!(
                serde_json::to_value(permission).expect("serialises"),
                json!(permission.as_str())
            );
        }
        let error = "write".parse::<Permission>().expect_err("unknown");
        let message = error.to_string();
        assert!(message.contains("`write`"), "{message}");
        for permission in Permission::ALL {
            assert!(
                message.contains(permission.as_str()),
                "{message} lacks {permission}"
            );
        }
        let error = serde_json::from_value::<Vec<Permission>>(json!(["writes", "admin"]))
            .expect_err("unknown");
        assert!(
            error.to_string().contains("unknown permission `admin`"),
            "{error}"
        );
    }

    #[test]
    fn what_each_kind_permits() {
        let access = model(KeyKind::Access, &[Permission::Writes, Permission::Schema]);
        let read_with_list = model(KeyKind::Read, &[Permission::Writes]);
        for permission in Permission::ALL {
            assert!(model(KeyKind::Master, &[]).permits(permission));
            assert_eq!(
                model(KeyKind::Write, &[]).permits(permission),
                permission == Permission::Writes
            );
            assert_eq!(
                read_with_list.permits(permission),
                permission == Permission::Queries
            );
            assert_eq!(
                access.permits(permission),
                matches!(permission, Permission::Writes | Permission::Schema)
            );
        }
        assert!(model(KeyKind::Write, &[]).may_write());
        assert!(!read_with_list.may_write());
        let revoked = KeyModel {
            is_active: false,
            ..model(KeyKind::Master, &[])
        };
        assert!(!revoked.may_write());
    }

    #[test]
    fn the_model_round_trips_as_json_and_keeps_unknown_option_sections() {
        let stored = json!({
            "key_id": "0123456789abcdef",
            "project_id": "4f1c9a3be6d2a1b07c3e5f11",
            "name": "tenant 7",
            "kind": "access",
            "permitted": ["writes", "saved_queries"],
            "is_active": true,
            "options": {
                "writes": {"autofill": {"tenant": {"id": 7}}},
                "queries": {"filters": [
                    {"property_name": "tenant.id", "operator": "eq", "property_value": 7}
                ]},
                "saved_queries": {"allowed": ["a"]},
                "datasets": {"operations": ["read"]}
            }
        });
        let key: KeyModel = serde_json::from_value(stored.clone()).expect("deserialises");
        assert_eq!(key.kind, KeyKind::Access);
        assert_eq!(
            key.permitted,
            [Permission::Writes, Permission::SavedQueries]
        );
        assert_eq!(key.autofill(), json!({"tenant": {"id": 7}}).as_object());
        assert_eq!(
            key.options.queries.as_ref().map(|q| q.filters.len()),
            Some(1)
        );
        assert!(key.options.other.contains_key("saved_queries"));
        assert_eq!(key.validate_shape(), Ok(()));
        assert_eq!(serde_json::to_value(&key).expect("serialises"), stored);

        let minimal: KeyModel = serde_json::from_value(json!({
            "key_id": "0123456789abcdef", "project_id": "p", "kind": "write", "is_active": false
        }))
        .expect("defaults apply");
        assert_eq!(minimal.autofill(), None);
        assert_eq!(minimal.permitted, []);
    }

    #[test]
    fn shapes_that_are_refused() {
        let empty_access = model(KeyKind::Access, &[]);
        let error = empty_access
            .validate_shape()
            .expect_err("an access key must permit something");
        assert_eq!(
            error,
            KeyModelError::AccessKeyPermitsNothing {
                key_id: empty_access.key_id.clone()
            }
        );
        assert!(
            error.to_string().contains("non-empty `permitted`"),
            "{error}"
        );
        assert_eq!(model(KeyKind::Master, &[]).validate_shape(), Ok(()));

        for (autofill, found) in [
            (json!([1]), "an array"),
            (json!("x"), "a string"),
            (json!(7), "a number"),
        ] {
            let options = json!({"writes": {"autofill": autofill}});
            let error = serde_json::from_value::<KeyOptions>(options)
                .expect_err("autofill must be an object");
            assert!(
                error.to_string().contains(&format!(
                    "options.writes.autofill must be a JSON object, not {found}"
                )),
                "{error}"
            );
        }
        let null_autofill = json!({"writes": {"autofill": null}});
        let options: KeyOptions = serde_json::from_value(null_autofill).expect("null means none");
        assert_eq!(options.writes.and_then(|w| w.autofill), None);
        let error = serde_json::from_value::<KeyModel>(json!({
            "key_id": "0123456789ABCDEF", "project_id": "p", "kind": "write", "is_active": true
        }))
        .expect_err("upper-case key id");
        assert!(
            error
                .to_string()
                .contains("exactly 16 characters, each 0-9 or a-f"),
            "{error}"
        );
    }

    #[test]
    fn key_ids_are_16_lowercase_hex() {
        let (a, b) = (KeyId::generate(), KeyId::generate());
        assert_ne!(a, b);
        assert_eq!(KeyId::parse(a.as_str()), Ok(a.clone()));
        for bad in [
            "",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789abcdeg",
            "0123456789ABCDEF",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_keys_are_64_hex_characters_and_distinct() {
        let keys: Vec<_> = (0..8).map(|_| generate_key()).collect();
        for key in &keys {
            assert_eq!(key.expose().len(), 64);
            assert!(
                key.expose()
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            );
            assert!(
                SecretKey::import(key.expose()).is_ok(),
                "generated keys are importable"
            );
        }
        let distinct: std::collections::HashSet<_> =
            keys.iter().map(|k| k.expose().to_owned()).collect();
        assert_eq!(distinct.len(), keys.len());
    }

    #[test]
    fn imported_keys_are_32_to_512_printable_ascii_characters() {
        assert!(SecretKey::import(&"k".repeat(32)).is_ok());
        assert!(SecretKey::import(&"~".repeat(512)).is_ok());
        let short = SecretKey::import(&"k".repeat(31)).expect_err("too short");
        assert_eq!(short, KeyModelError::KeyTooShort { length: 31 });
        assert!(
            short.to_string().contains("at least 32 characters"),
            "{short}"
        );
        assert_eq!(
            SecretKey::import(&"k".repeat(513)).map(|_| ()),
            Err(KeyModelError::KeyTooLong { length: 513 })
        );
        for bad in [
            format!("{} ", "k".repeat(32)),
            format!("{}é", "k".repeat(32)),
            format!("{}\n", "k".repeat(32)),
        ] {
            assert_eq!(
                SecretKey::import(&bad).map(|_| ()),
                Err(KeyModelError::KeyCharacters),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn digest_is_hmac_sha256_under_the_pepper() {
        // RFC 4231 test case 2.
        assert_eq!(
            key_digest_hex(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let digest = key_digest(PEPPER, "key");
        assert!(digest_matches(&digest, &key_digest(PEPPER, "key")));
        assert!(!digest_matches(
            &digest,
            &key_digest(b"another pepper", "key")
        ));
    }

    #[test]
    fn plain_lookup_finds_the_right_key_among_several() {
        let salt = ProjectSalt::generate();
        let secrets: Vec<_> = (0..3).map(|_| generate_key()).collect();
        let keys: Vec<_> = secrets
            .iter()
            .map(|secret| StoredKey::derive(model(KeyKind::Write, &[]), secret, PEPPER, &salt))
            .collect();
        for (secret, key) in secrets.iter().zip(&keys) {
            let found = find_key_by_password(PEPPER, secret.expose(), &keys).expect("a known key");
            assert_eq!(found.model.key_id, key.model.key_id);
        }
        let stranger = generate_key();
        assert!(find_key_by_password(PEPPER, stranger.expose(), &keys).is_none());
        assert!(find_key_by_password(b"wrong pepper", secrets[0].expose(), &keys).is_none());
        assert!(find_key_by_password(PEPPER, secrets[0].expose(), &[]).is_none());

        let digested: Vec<_> = keys
            .iter()
            .map(|key| DigestedKey {
                model: key.model.clone(),
                digest: key.digest,
            })
            .collect();
        for (secret, key) in secrets.iter().zip(&keys) {
            let found = find_digested_key_by_password(PEPPER, secret.expose(), &digested)
                .expect("a known key");
            assert_eq!(found.model.key_id, key.model.key_id);
        }
        assert!(find_digested_key_by_password(PEPPER, stranger.expose(), &digested).is_none());
    }

    #[test]
    fn stored_keys_hold_scram_verifiers_under_the_project_salt() {
        let salt = ProjectSalt::generate();
        let secrets: Vec<_> = (0..2).map(|_| generate_key()).collect();
        let keys: Vec<_> = secrets
            .iter()
            .map(|secret| StoredKey::derive(model(KeyKind::Write, &[]), secret, PEPPER, &salt))
            .collect();
        for mechanism in ScramMechanism::ALL {
            let expected = ScramVerifier::derive(
                mechanism,
                secrets[1].expose(),
                salt.salt(),
                salt.iterations(),
            );
            assert_eq!(keys[1].scram_verifier(mechanism), &expected);
            assert_ne!(
                keys[0].scram_verifier(mechanism),
                keys[1].scram_verifier(mechanism)
            );
        }
        let json = serde_json::to_value(&keys[0]).expect("serialises");
        assert_eq!(json["digest"], json!(hex::encode(keys[0].digest)));
        let back: StoredKey = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, keys[0]);
    }

    #[test]
    fn debug_never_shows_key_material() {
        let secret = generate_key();
        let salt = ProjectSalt::generate();
        let stored = StoredKey::derive(model(KeyKind::Master, &[]), &secret, PEPPER, &salt);
        let shown = [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{stored:?}"),
            format!("{stored:#?}"),
        ];
        let digest_hex = hex::encode(stored.digest);
        let stored_key_hex = hex::encode(&stored.scram_sha256.stored_key);
        for text in shown {
            assert!(!text.contains(secret.expose()), "{text}");
            assert!(!text.contains(&digest_hex), "{text}");
            assert!(!text.contains(&stored_key_hex), "{text}");
            assert!(!text.contains(&format!("{:?}", stored.digest)), "{text}");
            assert!(
                !text.contains(&format!("{:?}", stored.scram_sha512.server_key)),
                "{text}"
            );
        }
    }

    #[test]
    fn project_salts_are_random_and_refuse_weak_parameters() {
        let (a, b) = (ProjectSalt::generate(), ProjectSalt::generate());
        assert_ne!(a, b);
        assert_eq!(a.salt().len(), 24);
        assert_eq!(a.iterations(), 4096);
        assert_eq!(
            ProjectSalt::new(vec![7; 16], 4095),
            Err(KeyModelError::IterationsTooLow { iterations: 4095 })
        );
        assert_eq!(
            ProjectSalt::new(vec![7; 15], 4096),
            Err(KeyModelError::SaltTooShort { length: 15 })
        );
        assert!(ProjectSalt::new(vec![7; 16], 10_000).is_ok());

        let json = serde_json::to_value(&a).expect("serialises");
        assert!(json["salt"].is_string());
        let back: ProjectSalt = serde_json::from_value(json).expect("round trips");
        assert_eq!(back, a);
        let weak = json!({"salt": "W22ZaJ0SNY7soEsUEjb6gQ==", "iterations": 1000});
        let error = serde_json::from_value::<ProjectSalt>(weak).expect_err("too few iterations");
        assert!(
            error.to_string().contains("below the minimum of 4096"),
            "{error}"
        );
    }

    #[test]
    fn fake_salts_are_deterministic_and_differ_per_project() {
        let a = fake_salt_for_unknown_project(PEPPER, "project-a");
        assert_eq!(a, fake_salt_for_unknown_project(PEPPER, "project-a"));
        assert_ne!(a, fake_salt_for_unknown_project(PEPPER, "project-b"));
        assert_ne!(
            a,
            fake_salt_for_unknown_project(b"another pepper", "project-a")
        );
        assert_eq!(a.salt().len(), 24);
        assert_eq!(a.iterations(), 4096);
        let digest = hmac_sha256(PEPPER, b"fake-salt\nproject-a");
        assert_eq!(a.salt(), &digest[..24]);
    }
}
