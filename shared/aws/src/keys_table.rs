//! The Keys table (architecture.md "Keys table"): projects' SCRAM salts and keys' verifiers.
//!
//! Layout, one partition per project:
//!
//! | pk | sk | attributes |
//! |---|---|---|
//! | project_id | `project` | `salt` (S, base64), `iterations` (N), `created_at` (S) |
//! | project_id | `key#{key_id}` | `key_id`, `name`, `kind` (S); `permitted` (L of S); `is_active` (BOOL); `options` (S, JSON); `digest`, `scram_sha256_stored_key`, `scram_sha256_server_key`, `scram_sha512_stored_key`, `scram_sha512_server_key` (B); `created_at`, `updated_at` (S) |
//!
//! Contract:
//! - No plaintext key is ever written: a key item holds only what [`StoredKey`] holds (the model,
//!   the peppered digest, the verifiers) plus timestamps.
//! - `options` is stored as JSON text rather than a DynamoDB map: it is free-form customer JSON
//!   (autofill, query filters, sections this service does not use) that must read back exactly,
//!   and DynamoDB maps would turn numbers into decimals (`1.0` reads back as `1`), refuse empty
//!   strings in some positions and lose nothing we query on, since no request filters on options.
//! - Every read is strongly consistent: a revocation must be visible to the next read, which the
//!   60-second revocation bound (product.md §5) counts on.
//! - Errors say whether to retry: [`KeysTableError::is_transient`] is true only for throttling,
//!   timeouts and service-side failures (after the SDK's own retries); not-found and
//!   conditional failures are answers, not failures.
//! - Nothing here logs, and errors never carry digests or verifiers.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keen_shared::key::{
    DigestedKey, KeyId, KeyKind, KeyModel, KeyOptions, Permission, ProjectSalt, StoredKey,
};
use keen_shared::scram::ScramVerifier;
use std::collections::HashMap;

/// Sort key of a project's item.
pub const PROJECT_SK: &str = "project";
/// Prefix of key items' sort keys.
pub const KEY_SK_PREFIX: &str = "key#";
/// What [`KeysTable::list_digested_keys`] reads of a key item: everything but the SCRAM
/// verifiers. template.yaml's QueryRole allows reading exactly these (plus the key `pk`).
pub const DIGESTED_KEY_ATTRIBUTES: &[&str] = &[
    "sk",
    "key_id",
    "name",
    "kind",
    "permitted",
    "is_active",
    "options",
    "digest",
];

type Item = HashMap<String, AttributeValue>;

/// Why a Keys table operation did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum KeysTableError {
    #[error("project {project_id} has no key {key_id}")]
    KeyNotFound { project_id: String, key_id: KeyId },
    #[error("project {project_id} already has a key {key_id}")]
    KeyExists { project_id: String, key_id: KeyId },
    #[error("the Keys table item {project_id} / {sort_key} is malformed: {reason}")]
    Malformed {
        project_id: String,
        sort_key: String,
        reason: String,
    },
    #[error("{operation} on the Keys table failed, retry later: {message}")]
    Unavailable {
        operation: &'static str,
        message: String,
    },
    #[error(
        "{operation} on the Keys table failed: {message} (check the table name, its key schema \
         and the function's permissions)"
    )]
    Service {
        operation: &'static str,
        message: String,
    },
}

impl KeysTableError {
    /// Whether the same call may succeed later (throttling, a timeout, a service-side failure).
    pub fn is_transient(&self) -> bool {
        matches!(self, KeysTableError::Unavailable { .. })
    }
}

/// The Keys table: the authorizer writes it; ingest and the gateway read it.
#[derive(Debug, Clone)]
pub struct KeysTable {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl KeysTable {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: impl Into<String>) -> Self {
        KeysTable {
            client,
            table_name: table_name.into(),
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }

    /// A cheap DescribeTable: opens the connection (the TLS handshake dominates a cold start)
    /// and fails early when the table is missing or not permitted.
    pub async fn warm_up(&self) -> Result<(), KeysTableError> {
        self.client
            .describe_table()
            .table_name(&self.table_name)
            .send()
            .await
            .map_err(|error| classify("DescribeTable", error))?;
        Ok(())
    }

    /// The project's salt, creating the project item with a fresh salt if it has none. Safe to
    /// call concurrently: the put is conditional, and a caller that loses the race reads the
    /// winner's salt, so every key of the project shares one salt.
    pub async fn put_project(&self, project_id: &str) -> Result<ProjectSalt, KeysTableError> {
        let salt = ProjectSalt::generate();
        let now = now_text();
        let result = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .item("pk", s(project_id))
            .item("sk", s(PROJECT_SK))
            .item("salt", s(BASE64.encode(salt.salt())))
            .item(
                "iterations",
                AttributeValue::N(salt.iterations().to_string()),
            )
            .item("created_at", s(now))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(salt),
            Err(error) if is_conditional_failure(&error) => self
                .get_project(project_id)
                .await?
                .ok_or(KeysTableError::Unavailable {
                    operation: "GetItem",
                    message: format!(
                        "the item of project {project_id} vanished while it was being read"
                    ),
                }),
            Err(error) => Err(classify("PutItem", error)),
        }
    }

    /// The project's salt, or `None` if the project has no item.
    pub async fn get_project(
        &self,
        project_id: &str,
    ) -> Result<Option<ProjectSalt>, KeysTableError> {
        let item = self.get_item(project_id, PROJECT_SK).await?;
        item.map(|item| project_from_item(project_id, &item))
            .transpose()
    }

    /// Writes a new key; refuses to overwrite an existing key id.
    pub async fn put_key(&self, key: &StoredKey) -> Result<(), KeysTableError> {
        let model = &key.model;
        let item = key_to_item(key)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_failure(&error) => Err(KeysTableError::KeyExists {
                project_id: model.project_id.clone(),
                key_id: model.key_id.clone(),
            }),
            Err(error) => Err(classify("PutItem", error)),
        }
    }

    /// One key, or `None`.
    pub async fn get_key(
        &self,
        project_id: &str,
        key_id: &KeyId,
    ) -> Result<Option<StoredKey>, KeysTableError> {
        let item = self.get_item(project_id, &key_sort_key(key_id)).await?;
        item.map(|item| key_from_item(project_id, &item))
            .transpose()
    }

    /// Every key of the project, in key id order (the sort key's order).
    pub async fn list_keys(&self, project_id: &str) -> Result<Vec<StoredKey>, KeysTableError> {
        self.query_keys(project_id, None, key_from_item).await
    }

    /// Every key of the project without its SCRAM verifiers, in key id order: what a password
    /// check needs. Asks for exactly [`DIGESTED_KEY_ATTRIBUTES`] (`Select` = specific
    /// attributes), which is all the query function's IAM role may read of the table.
    pub async fn list_digested_keys(
        &self,
        project_id: &str,
    ) -> Result<Vec<DigestedKey>, KeysTableError> {
        self.query_keys(
            project_id,
            Some(DIGESTED_KEY_ATTRIBUTES),
            digested_key_from_item,
        )
        .await
    }

    async fn query_keys<K>(
        &self,
        project_id: &str,
        projection: Option<&[&str]>,
        parse: fn(&str, &Item) -> Result<K, KeysTableError>,
    ) -> Result<Vec<K>, KeysTableError> {
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table_name)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", "pk")
                .expression_attribute_names("#sk", "sk")
                .expression_attribute_values(":pk", s(project_id))
                .expression_attribute_values(":prefix", s(KEY_SK_PREFIX))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Some(attributes) = projection {
                // Names through placeholders: `name` and `options` are DynamoDB reserved words.
                for name in attributes {
                    query = query.expression_attribute_names(format!("#{name}"), *name);
                }
                let placeholders: Vec<String> =
                    attributes.iter().map(|name| format!("#{name}")).collect();
                query = query
                    .select(Select::SpecificAttributes)
                    .projection_expression(placeholders.join(", "));
            }
            let page = query
                .send()
                .await
                .map_err(|error| classify("Query", error))?;
            for item in page.items() {
                keys.push(parse(project_id, item)?);
            }
            match page.last_evaluated_key() {
                Some(last) if !last.is_empty() => start = Some(last.clone()),
                _ => return Ok(keys),
            }
        }
    }

    /// Revokes (`false`) or reinstates (`true`) a key.
    pub async fn set_active(
        &self,
        project_id: &str,
        key_id: &KeyId,
        active: bool,
    ) -> Result<(), KeysTableError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key("pk", s(project_id))
            .key("sk", s(key_sort_key(key_id)))
            .update_expression("SET is_active = :active, updated_at = :now")
            .expression_attribute_values(":active", AttributeValue::Bool(active))
            .expression_attribute_values(":now", s(now_text()))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_failure(&error) => Err(not_found(project_id, key_id)),
            Err(error) => Err(classify("UpdateItem", error)),
        }
    }

    /// Deletes a key for good.
    pub async fn delete_key(&self, project_id: &str, key_id: &KeyId) -> Result<(), KeysTableError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table_name)
            .key("pk", s(project_id))
            .key("sk", s(key_sort_key(key_id)))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_failure(&error) => Err(not_found(project_id, key_id)),
            Err(error) => Err(classify("DeleteItem", error)),
        }
    }

    async fn get_item(
        &self,
        project_id: &str,
        sort_key: &str,
    ) -> Result<Option<Item>, KeysTableError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .key("pk", s(project_id))
            .key("sk", s(sort_key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| classify("GetItem", error))?;
        Ok(output.item)
    }
}

/// `key#{key_id}`.
pub fn key_sort_key(key_id: &KeyId) -> String {
    format!("{KEY_SK_PREFIX}{key_id}")
}

fn not_found(project_id: &str, key_id: &KeyId) -> KeysTableError {
    KeysTableError::KeyNotFound {
        project_id: project_id.to_owned(),
        key_id: key_id.clone(),
    }
}

fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

fn b(bytes: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(bytes))
}

fn now_text() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        });
    keen_shared::timestamp::format_millis(millis)
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Master => "master",
        KeyKind::Write => "write",
        KeyKind::Read => "read",
        KeyKind::Access => "access",
    }
}

fn key_to_item(key: &StoredKey) -> Result<Item, KeysTableError> {
    let model = &key.model;
    let options =
        serde_json::to_string(&model.options).map_err(|error| KeysTableError::Malformed {
            project_id: model.project_id.clone(),
            sort_key: key_sort_key(&model.key_id),
            reason: format!("options do not serialise: {error}"),
        })?;
    let now = now_text();
    let permitted = model
        .permitted
        .iter()
        .map(|permission| s(permission.as_str()))
        .collect();
    Ok(HashMap::from([
        ("pk".to_owned(), s(&model.project_id)),
        ("sk".to_owned(), s(key_sort_key(&model.key_id))),
        ("key_id".to_owned(), s(model.key_id.as_str())),
        ("name".to_owned(), s(&model.name)),
        ("kind".to_owned(), s(kind_name(model.kind))),
        ("permitted".to_owned(), AttributeValue::L(permitted)),
        (
            "is_active".to_owned(),
            AttributeValue::Bool(model.is_active),
        ),
        ("options".to_owned(), s(options)),
        ("digest".to_owned(), b(&key.digest)),
        (
            "scram_sha256_stored_key".to_owned(),
            b(&key.scram_sha256.stored_key),
        ),
        (
            "scram_sha256_server_key".to_owned(),
            b(&key.scram_sha256.server_key),
        ),
        (
            "scram_sha512_stored_key".to_owned(),
            b(&key.scram_sha512.stored_key),
        ),
        (
            "scram_sha512_server_key".to_owned(),
            b(&key.scram_sha512.server_key),
        ),
        ("created_at".to_owned(), s(now.clone())),
        ("updated_at".to_owned(), s(now)),
    ]))
}

/// Reads typed attributes of one item, naming the item in every error.
struct ItemReader<'a> {
    project_id: &'a str,
    sort_key: &'a str,
    item: &'a Item,
}

impl<'a> ItemReader<'a> {
    fn malformed(&self, reason: String) -> KeysTableError {
        KeysTableError::Malformed {
            project_id: self.project_id.to_owned(),
            sort_key: self.sort_key.to_owned(),
            reason,
        }
    }

    fn get(&self, name: &str) -> Result<&'a AttributeValue, KeysTableError> {
        self.item
            .get(name)
            .ok_or_else(|| self.malformed(format!("attribute {name} is missing")))
    }

    fn string(&self, name: &str) -> Result<&'a str, KeysTableError> {
        match self.get(name)? {
            AttributeValue::S(text) => Ok(text),
            _ => Err(self.malformed(format!("attribute {name} is not a string"))),
        }
    }

    fn bytes(&self, name: &str) -> Result<&'a [u8], KeysTableError> {
        match self.get(name)? {
            AttributeValue::B(blob) => Ok(blob.as_ref()),
            _ => Err(self.malformed(format!("attribute {name} is not binary"))),
        }
    }

    fn boolean(&self, name: &str) -> Result<bool, KeysTableError> {
        match self.get(name)? {
            AttributeValue::Bool(flag) => Ok(*flag),
            _ => Err(self.malformed(format!("attribute {name} is not a boolean"))),
        }
    }

    fn verifier(&self, mechanism: &str) -> Result<ScramVerifier, KeysTableError> {
        Ok(ScramVerifier {
            stored_key: self
                .bytes(&format!("scram_{mechanism}_stored_key"))?
                .to_vec(),
            server_key: self
                .bytes(&format!("scram_{mechanism}_server_key"))?
                .to_vec(),
        })
    }
}

fn project_from_item(project_id: &str, item: &Item) -> Result<ProjectSalt, KeysTableError> {
    let reader = ItemReader {
        project_id,
        sort_key: PROJECT_SK,
        item,
    };
    let salt = BASE64
        .decode(reader.string("salt")?)
        .map_err(|_| reader.malformed("salt is not base64".to_owned()))?;
    let iterations = match reader.get("iterations")? {
        AttributeValue::N(number) => number.parse::<u32>().ok(),
        _ => None,
    }
    .ok_or_else(|| reader.malformed("iterations is not a 32-bit count".to_owned()))?;
    ProjectSalt::new(salt, iterations).map_err(|error| reader.malformed(error.to_string()))
}

fn key_from_item(project_id: &str, item: &Item) -> Result<StoredKey, KeysTableError> {
    let reader = ItemReader::of_key(project_id, item);
    let DigestedKey { model, digest } = reader.digested_key()?;
    Ok(StoredKey {
        model,
        digest,
        scram_sha256: reader.verifier("sha256")?,
        scram_sha512: reader.verifier("sha512")?,
    })
}

fn digested_key_from_item(project_id: &str, item: &Item) -> Result<DigestedKey, KeysTableError> {
    ItemReader::of_key(project_id, item).digested_key()
}

impl<'a> ItemReader<'a> {
    fn of_key(project_id: &'a str, item: &'a Item) -> Self {
        let sort_key = match item.get("sk") {
            Some(AttributeValue::S(sk)) => sk.as_str(),
            _ => "?",
        };
        ItemReader {
            project_id,
            sort_key,
            item,
        }
    }

    /// The model and the digest: every attribute of a key item but the verifiers.
    fn digested_key(&self) -> Result<DigestedKey, KeysTableError> {
        let key_id = KeyId::parse(self.string("key_id")?)
            .map_err(|error| self.malformed(error.to_string()))?;
        let kind = match self.string("kind")? {
            "master" => KeyKind::Master,
            "write" => KeyKind::Write,
            "read" => KeyKind::Read,
            "access" => KeyKind::Access,
            other => return Err(self.malformed(format!("unknown kind {other:?}"))),
        };
        let permitted = match self.get("permitted")? {
            AttributeValue::L(list) => list
                .iter()
                .map(|value| match value {
                    AttributeValue::S(name) => name
                        .parse::<Permission>()
                        .map_err(|error| self.malformed(error.to_string())),
                    _ => Err(self.malformed("permitted holds a non-string".to_owned())),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(self.malformed("permitted is not a list".to_owned())),
        };
        let options: KeyOptions = serde_json::from_str(self.string("options")?)
            .map_err(|error| self.malformed(format!("options: {error}")))?;
        let digest: [u8; 32] = self
            .bytes("digest")?
            .try_into()
            .map_err(|_| self.malformed("digest is not 32 bytes".to_owned()))?;
        Ok(DigestedKey {
            model: KeyModel {
                key_id,
                project_id: self.project_id.to_owned(),
                name: self.string("name")?.to_owned(),
                kind,
                permitted,
                is_active: self.boolean("is_active")?,
                options,
            },
            digest,
        })
    }
}

fn is_conditional_failure<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    matches!(error, SdkError::ServiceError(_))
        && error.code() == Some("ConditionalCheckFailedException")
}

/// Sorts an SDK failure into retry-later or fix-the-setup.
fn classify<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> KeysTableError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let transient = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(context) => {
            context.raw().status().is_server_error()
                || matches!(
                    error.code(),
                    Some(
                        "ThrottlingException"
                            | "ProvisionedThroughputExceededException"
                            | "RequestLimitExceeded"
                            | "LimitExceededException"
                            | "TransactionConflictException"
                            | "InternalServerError"
                            | "ServiceUnavailable"
                    )
                )
        }
        _ => false,
    };
    let message = DisplayErrorContext(&error).to_string();
    if transient {
        KeysTableError::Unavailable { operation, message }
    } else {
        KeysTableError::Service { operation, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keen_shared::key::{KeyOptions, generate_key};
    use serde_json::json;

    const PEPPER: &[u8] = b"a pepper of sixteen bytes or more";

    fn stored(
        kind: KeyKind,
        permitted: Vec<Permission>,
        options: KeyOptions,
    ) -> (StoredKey, String) {
        let secret = generate_key();
        let model = KeyModel {
            key_id: KeyId::generate(),
            project_id: "p1".into(),
            name: "tenant 7".into(),
            kind,
            permitted,
            is_active: true,
            options,
        };
        let key = StoredKey::derive(model, &secret, PEPPER, &ProjectSalt::generate());
        (key, secret.expose().to_owned())
    }

    #[test]
    fn the_digested_attributes_are_a_key_item_without_its_verifiers() {
        let (key, _) = stored(KeyKind::Read, Vec::new(), KeyOptions::default());
        let mut item = key_to_item(&key).expect("item");
        item.retain(|name, _| DIGESTED_KEY_ATTRIBUTES.contains(&name.as_str()));
        assert!(item.keys().all(|name| !name.starts_with("scram_")));
        let digested = digested_key_from_item("p1", &item).expect("enough to check a password");
        assert_eq!(digested.model, key.model);
        assert_eq!(digested.digest, key.digest);
    }

    /// The query function's role may read exactly what `list_digested_keys` asks for.
    #[cfg(feature = "provision")]
    #[test]
    fn the_query_role_reads_keys_as_list_digested_keys_asks() {
        use crate::provision::DEPLOYMENT_TEMPLATE;
        let template: serde_yaml::Value =
            serde_yaml::from_str(DEPLOYMENT_TEMPLATE).expect("template.yaml is YAML");
        let statements = &template["Resources"]["QueryRole"]["Properties"]["Policies"][0]["PolicyDocument"]
            ["Statement"];
        let statement = statements
            .as_sequence()
            .expect("statements")
            .iter()
            .find(|statement| statement["Sid"] == "KeysWithoutVerifiers")
            .expect("QueryRole has a KeysWithoutVerifiers statement");
        let condition = &statement["Condition"];
        let mut allowed: Vec<&str> = condition["ForAllValues:StringEquals"]["dynamodb:Attributes"]
            .as_sequence()
            .expect("attribute list")
            .iter()
            .map(|name| name.as_str().expect("a name"))
            .collect();
        allowed.sort_unstable();
        let mut asked: Vec<&str> = DIGESTED_KEY_ATTRIBUTES.to_vec();
        asked.push("pk");
        asked.sort_unstable();
        assert_eq!(allowed, asked);
        assert_eq!(
            condition["StringEquals"]["dynamodb:Select"].as_str(),
            Some("SPECIFIC_ATTRIBUTES")
        );
        assert_eq!(statement["Action"].as_str(), Some("dynamodb:Query"));
    }

    #[test]
    fn a_key_item_round_trips_and_holds_no_plaintext() {
        let options: KeyOptions = serde_json::from_value(json!({
            "writes": {"autofill": {"tenant": {"id": 7, "ratio": 1.0}}},
            "saved_queries": {"allowed": ["a"]}
        }))
        .expect("options");
        let (key, secret) = stored(
            KeyKind::Access,
            vec![Permission::Writes, Permission::Schema],
            options,
        );
        let item = key_to_item(&key).expect("item");
        assert_eq!(item.get("sk"), Some(&s(key_sort_key(&key.model.key_id))));
        assert_eq!(item.get("kind"), Some(&s("access")));
        for value in item.values() {
            let text = format!("{value:?}");
            assert!(!text.contains(&secret), "{text}");
            if let AttributeValue::B(blob) = value {
                assert_ne!(blob.as_ref(), secret.as_bytes());
            }
        }
        let back = key_from_item("p1", &item).expect("parses");
        assert_eq!(back, key);
        // 1.0 survives as written: the reason options are JSON text.
        let options = item
            .get("options")
            .and_then(|v| v.as_s().ok())
            .expect("options");
        assert!(options.contains("1.0"), "{options}");
    }

    #[test]
    fn malformed_items_are_named() {
        let (key, _) = stored(KeyKind::Write, vec![], KeyOptions::default());
        let mut item = key_to_item(&key).expect("item");
        item.insert("digest".into(), b(&[1, 2, 3]));
        let error = key_from_item("p1", &item).expect_err("short digest");
        assert!(
            error.to_string().contains("digest is not 32 bytes"),
            "{error}"
        );
        assert!(!error.is_transient());

        let mut item = key_to_item(&key).expect("item");
        item.remove("scram_sha512_server_key");
        let error = key_from_item("p1", &item).expect_err("missing verifier");
        assert!(
            error
                .to_string()
                .contains("scram_sha512_server_key is missing"),
            "{error}"
        );

        let mut item = key_to_item(&key).expect("item");
        item.insert("kind".into(), s("admin"));
        let error = key_from_item("p1", &item).expect_err("unknown kind");
        assert!(error.to_string().contains("unknown kind"), "{error}");
    }

    #[test]
    fn project_items_are_checked() {
        let item = HashMap::from([
            ("salt".to_owned(), s(BASE64.encode([7u8; 24]))),
            ("iterations".to_owned(), AttributeValue::N("4096".into())),
        ]);
        let salt = project_from_item("p1", &item).expect("valid");
        assert_eq!(salt.salt(), &[7u8; 24]);
        let weak = HashMap::from([
            ("salt".to_owned(), s(BASE64.encode([7u8; 24]))),
            ("iterations".to_owned(), AttributeValue::N("1000".into())),
        ]);
        let error = project_from_item("p1", &weak).expect_err("too few iterations");
        assert!(error.to_string().contains("4096"), "{error}");
    }
}
