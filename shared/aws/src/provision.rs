//! Tables and queues from `template.yaml`, the single source of truth for them.
//!
//! Contract:
//! - [`DeploymentSpec::deployment`] is the repository's own template, embedded at build time, so
//!   the local stack and the tests create exactly what CloudFormation would, with no second copy.
//!   [`DeploymentSpec::parse`] reads any template text: every `AWS::DynamoDB::Table` (key schema,
//!   attribute definitions, global secondary indexes, TTL) and every `AWS::SQS::Queue` (its
//!   attributes). CloudFormation tags (`!Ref`, `!Sub`, `!GetAtt`…) anywhere else are tolerated;
//!   inside a property this module needs they are refused, since only CloudFormation can resolve
//!   them.
//! - A property that would change what the code sees (a local secondary index, a stream, a
//!   redrive policy…) and that this module cannot reproduce is refused with
//!   [`ProvisionError::Unsupported`] rather than silently dropped, so the local stack never
//!   quietly differs from the deployment. Deployment-only properties (point-in-time recovery,
//!   encryption, tags, names) are skipped.
//! - Physical names are `{prefix}{LogicalId}` (`.fifo` appended for FIFO queues); each resource
//!   is published under an environment variable named by the template's convention:
//!   `EventsTable` → `EVENTS_TABLE`, `DeadLetterQueue` → `DEAD_LETTER_QUEUE_URL` (the URL, not
//!   the name, since that is what SQS calls take).
//! - [`provision`] is idempotent: a table or queue that already exists with the same definition
//!   is reused; one that exists with a different key schema or attributes is an error.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The repository's `template.yaml`, embedded so that provisioning needs no file at run time.
pub const DEPLOYMENT_TEMPLATE: &str = include_str!("../../../template.yaml");

const TABLE_TYPE: &str = "AWS::DynamoDB::Table";
const QUEUE_TYPE: &str = "AWS::SQS::Queue";

/// How long [`provision`] waits for a new table to become ACTIVE (real DynamoDB takes seconds;
/// moto is immediate).
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);
const TABLE_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Table properties that matter only to a deployment: names are generated, and recovery,
/// encryption, tags, deletion protection and table class do not change what code sees.
const TABLE_PROPERTIES_SKIPPED: &[&str] = &[
    "TableName",
    "PointInTimeRecoverySpecification",
    "SSESpecification",
    "Tags",
    "DeletionProtectionEnabled",
    "ContributorInsightsSpecification",
    "TableClass",
    "ResourcePolicy",
];

/// Queue properties that matter only to a deployment (a KMS key does not exist locally).
const QUEUE_PROPERTIES_SKIPPED: &[&str] = &[
    "QueueName",
    "Tags",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
];

/// Queue properties that are SQS attributes of the same name.
const QUEUE_ATTRIBUTES: &[&str] = &[
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "SqsManagedSseEnabled",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
];

/// Why a template could not be read or its resources created.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("template.yaml cannot be read: {message}")]
    Template { message: String },
    #[error(
        "resource {logical_id}: property {property} cannot be provisioned locally ({reason}); \
         teach shared/aws/src/provision.rs about it or change the template"
    )]
    Unsupported {
        logical_id: String,
        property: String,
        reason: String,
    },
    #[error("invalid name prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        prefix: String,
        reason: &'static str,
    },
    #[error(
        "{name} already exists but differs from template.yaml ({reason}); delete it or use \
         another prefix"
    )]
    Conflict { name: String, reason: String },
    #[error("{operation} on {name} failed: {message}")]
    Service {
        operation: &'static str,
        name: String,
        message: String,
    },
    #[error("table {name} did not become ACTIVE within {seconds} s")]
    Timeout { name: String, seconds: u64 },
}

/// One key attribute of a table or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyElement {
    pub attribute_name: String,
    /// `HASH` or `RANGE`.
    pub key_type: String,
}

/// One typed attribute of a table (`S`, `N` or `B`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeSpec {
    pub attribute_name: String,
    pub attribute_type: String,
}

/// A global secondary index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub index_name: String,
    pub key_schema: Vec<KeyElement>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection_type: String,
    pub non_key_attributes: Vec<String>,
}

/// An `AWS::DynamoDB::Table` of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub logical_id: String,
    pub key_schema: Vec<KeyElement>,
    pub attribute_definitions: Vec<AttributeSpec>,
    pub global_secondary_indexes: Vec<IndexSpec>,
    /// The TTL attribute, when TTL is enabled.
    pub ttl_attribute: Option<String>,
}

impl TableSpec {
    /// The environment variable that carries this table's name, e.g. `DEAD_LETTERS_TABLE`.
    pub fn env_var(&self) -> String {
        let base = self
            .logical_id
            .strip_suffix("Table")
            .filter(|base| !base.is_empty())
            .unwrap_or(&self.logical_id);
        format!("{}_TABLE", screaming_snake(base))
    }

    /// The physical name under `prefix`.
    pub fn physical_name(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.logical_id)
    }
}

/// An `AWS::SQS::Queue` of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub logical_id: String,
    /// SQS attributes by name, as SQS takes them (strings).
    pub attributes: BTreeMap<String, String>,
}

impl QueueSpec {
    /// The environment variable that carries this queue's URL, e.g. `DEAD_LETTER_QUEUE_URL`.
    pub fn env_var(&self) -> String {
        format!("{}_URL", screaming_snake(&self.logical_id))
    }

    pub fn is_fifo(&self) -> bool {
        self.attributes
            .get("FifoQueue")
            .is_some_and(|v| v == "true")
    }

    /// The physical name under `prefix` (SQS requires the `.fifo` suffix on FIFO queues).
    pub fn physical_name(&self, prefix: &str) -> String {
        let suffix = if self.is_fifo() { ".fifo" } else { "" };
        format!("{prefix}{}{suffix}", self.logical_id)
    }
}

/// The tables and queues of a template, in template order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentSpec {
    pub tables: Vec<TableSpec>,
    pub queues: Vec<QueueSpec>,
}

impl DeploymentSpec {
    /// The repository's `template.yaml`.
    pub fn deployment() -> Result<Self, ProvisionError> {
        Self::parse(DEPLOYMENT_TEMPLATE)
    }

    /// Reads the tables and queues of a CloudFormation/SAM template.
    pub fn parse(template: &str) -> Result<Self, ProvisionError> {
        let root: Value =
            serde_yaml::from_str(template).map_err(|error| ProvisionError::Template {
                message: error.to_string(),
            })?;
        let resources = root
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| ProvisionError::Template {
                message: "no `Resources` mapping at the top level".to_owned(),
            })?;
        let mut spec = DeploymentSpec {
            tables: Vec::new(),
            queues: Vec::new(),
        };
        for (id, resource) in resources {
            let logical_id = id.as_str().ok_or_else(|| ProvisionError::Template {
                message: "a resource's logical id is not a string".to_owned(),
            })?;
            let empty = Mapping::new();
            let properties = resource
                .get("Properties")
                .map(|value| {
                    value
                        .as_mapping()
                        .ok_or_else(|| unsupported(logical_id, "Properties", "not a mapping"))
                })
                .transpose()?
                .unwrap_or(&empty);
            match resource.get("Type").and_then(Value::as_str) {
                Some(TABLE_TYPE) => spec.tables.push(parse_table(logical_id, properties)?),
                Some(QUEUE_TYPE) => spec.queues.push(parse_queue(logical_id, properties)?),
                _ => {}
            }
        }
        let mut vars: Vec<String> = spec.tables.iter().map(TableSpec::env_var).collect();
        vars.extend(spec.queues.iter().map(QueueSpec::env_var));
        vars.sort();
        if let Some(pair) = vars.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(ProvisionError::Template {
                message: format!("two resources map to the environment variable {}", pair[0]),
            });
        }
        Ok(spec)
    }

    pub fn table(&self, logical_id: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.logical_id == logical_id)
    }

    pub fn queue(&self, logical_id: &str) -> Option<&QueueSpec> {
        self.queues.iter().find(|q| q.logical_id == logical_id)
    }
}

/// What [`provision`] created: environment variable → table name or queue URL, and the tables
/// whose TTL the server could not enable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionedNames {
    names: BTreeMap<String, String>,
    without_ttl: Vec<String>,
}

impl ProvisionedNames {
    /// The table name or queue URL published under `env_var` (e.g. `KEYS_TABLE`).
    pub fn get(&self, env_var: &str) -> Option<&str> {
        self.names.get(env_var).map(String::as_str)
    }

    /// Every (variable, value) pair, sorted by variable.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.names.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `export NAME=value` lines, one per resource, for a shell to `eval`.
    pub fn to_exports(&self) -> String {
        self.names
            .iter()
            .map(|(name, value)| format!("export {name}={}\n", shell_quote(value)))
            .collect()
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.names
    }

    /// Tables whose template asks for TTL on a server without the TimeToLive API (dynalite, the
    /// local stand-in): their expired items stay until removed otherwise. Empty on DynamoDB.
    pub fn without_ttl(&self) -> &[String] {
        &self.without_ttl
    }
}

/// Creates every table and queue of `spec` with names `{name_prefix}{LogicalId}`, enables TTL
/// where the template asks, and returns where each one is. Existing resources with the same
/// definition are reused, so running it twice is harmless.
pub async fn provision(
    dynamodb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    spec: &DeploymentSpec,
    name_prefix: &str,
) -> Result<ProvisionedNames, ProvisionError> {
    check_prefix(name_prefix)?;
    let mut names = BTreeMap::new();
    let mut without_ttl = Vec::new();
    // Create every table before waiting on any, so that real DynamoDB builds them in parallel.
    for table in &spec.tables {
        create_table(dynamodb, table, &table.physical_name(name_prefix)).await?;
    }
    for table in &spec.tables {
        let name = table.physical_name(name_prefix);
        wait_until_active(dynamodb, &name).await?;
        if let Some(attribute) = &table.ttl_attribute
            && enable_ttl(dynamodb, &name, attribute).await? == Ttl::Unsupported
        {
            without_ttl.push(name.clone());
        }
        names.insert(table.env_var(), name);
    }
    for queue in &spec.queues {
        let url = create_queue(sqs, queue, &queue.physical_name(name_prefix)).await?;
        names.insert(queue.env_var(), url);
    }
    Ok(ProvisionedNames { names, without_ttl })
}

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    table: &TableSpec,
    name: &str,
) -> Result<(), ProvisionError> {
    let build = |error: aws_sdk_dynamodb::error::BuildError| ProvisionError::Unsupported {
        logical_id: table.logical_id.clone(),
        property: "KeySchema".to_owned(),
        reason: error.to_string(),
    };
    let key_schema = |elements: &[KeyElement]| {
        elements
            .iter()
            .map(|element| {
                KeySchemaElement::builder()
                    .attribute_name(&element.attribute_name)
                    .key_type(KeyType::from(element.key_type.as_str()))
                    .build()
                    .map_err(build)
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let attributes = table
        .attribute_definitions
        .iter()
        .map(|attribute| {
            AttributeDefinition::builder()
                .attribute_name(&attribute.attribute_name)
                .attribute_type(ScalarAttributeType::from(attribute.attribute_type.as_str()))
                .build()
                .map_err(build)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut indexes = Vec::new();
    for index in &table.global_secondary_indexes {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(index.projection_type.as_str()))
            .set_non_key_attributes(
                (!index.non_key_attributes.is_empty()).then(|| index.non_key_attributes.clone()),
            )
            .build();
        indexes.push(
            GlobalSecondaryIndex::builder()
                .index_name(&index.index_name)
                .set_key_schema(Some(key_schema(&index.key_schema)?))
                .projection(projection)
                .build()
                .map_err(build)?,
        );
    }
    let result = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&table.key_schema)?))
        .set_attribute_definitions(Some(attributes))
        .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            check_existing_table(client, table, name).await
        }
        Err(error) => Err(service_error("CreateTable", name, &error)),
    }
}

/// An existing table is reused only if its key schema is the template's: anything else would
/// make the code's reads and writes fail in confusing ways later.
async fn check_existing_table(
    client: &aws_sdk_dynamodb::Client,
    table: &TableSpec,
    name: &str,
) -> Result<(), ProvisionError> {
    let described = client
        .describe_table()
        .table_name(name)
        .send()
        .await
        .map_err(|error| service_error("DescribeTable", name, &error))?;
    let existing: Vec<KeyElement> = described
        .table()
        .map(|t| t.key_schema())
        .unwrap_or_default()
        .iter()
        .map(|element| KeyElement {
            attribute_name: element.attribute_name().to_owned(),
            key_type: element.key_type().as_str().to_owned(),
        })
        .collect();
    if existing == table.key_schema {
        Ok(())
    } else {
        Err(ProvisionError::Conflict {
            name: name.to_owned(),
            reason: format!("key schema {existing:?} instead of {:?}", table.key_schema),
        })
    }
}

async fn wait_until_active(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<(), ProvisionError> {
    let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_TIMEOUT;
    loop {
        let described = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|error| service_error("DescribeTable", name, &error))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProvisionError::Timeout {
                name: name.to_owned(),
                seconds: TABLE_ACTIVE_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(TABLE_POLL_INTERVAL).await;
    }
}

/// Whether a table's TTL is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ttl {
    On,
    /// The server has no TimeToLive API (dynalite answers `UnknownOperationException`).
    Unsupported,
}

/// Enables TTL unless it already is on the same attribute (DynamoDB refuses to enable it twice).
async fn enable_ttl(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    attribute: &str,
) -> Result<Ttl, ProvisionError> {
    let described = client
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(|error| service_error("DescribeTimeToLive", name, &error))?;
    if let Some(current) = described.time_to_live_description() {
        let on = matches!(
            current.time_to_live_status(),
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        );
        match current.attribute_name() {
            Some(existing) if on && existing == attribute => return Ok(Ttl::On),
            Some(existing) if on => {
                return Err(ProvisionError::Conflict {
                    name: name.to_owned(),
                    reason: format!("TTL is on attribute {existing}, not {attribute}"),
                });
            }
            _ => {}
        }
    }
    let specification = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(attribute)
        .build()
        .map_err(|error| ProvisionError::Unsupported {
            logical_id: name.to_owned(),
            property: "TimeToLiveSpecification".to_owned(),
            reason: error.to_string(),
        })?;
    match client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(specification)
        .send()
        .await
    {
        Ok(_) => Ok(Ttl::On),
        Err(error) if error.code() == Some("UnknownOperationException") => Ok(Ttl::Unsupported),
        Err(error) => Err(service_error("UpdateTimeToLive", name, &error)),
    }
}

async fn create_queue(
    client: &aws_sdk_sqs::Client,
    queue: &QueueSpec,
    name: &str,
) -> Result<String, ProvisionError> {
    let attributes: HashMap<QueueAttributeName, String> = queue
        .attributes
        .iter()
        .map(|(name, value)| (QueueAttributeName::from(name.as_str()), value.clone()))
        .collect();
    let created = client
        .create_queue()
        .queue_name(name)
        .set_attributes((!attributes.is_empty()).then_some(attributes))
        .send()
        .await
        .map_err(|error| {
            // SQS answers QueueNameExists (QueueAlreadyExists in the JSON protocol) when a queue
            // of that name has other attributes; the same attributes return the existing URL.
            let code = error.code().unwrap_or_default();
            if code.contains("QueueNameExists") || code.contains("QueueAlreadyExists") {
                ProvisionError::Conflict {
                    name: name.to_owned(),
                    reason: "the queue has other attributes".to_owned(),
                }
            } else {
                ProvisionError::Service {
                    operation: "CreateQueue",
                    name: name.to_owned(),
                    message: DisplayErrorContext(&error).to_string(),
                }
            }
        })?;
    created
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| ProvisionError::Service {
            operation: "CreateQueue",
            name: name.to_owned(),
            message: "the answer carries no queue URL".to_owned(),
        })
}

fn service_error<E, R>(
    operation: &'static str,
    name: &str,
    error: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> ProvisionError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    ProvisionError::Service {
        operation,
        name: name.to_owned(),
        message: DisplayErrorContext(error).to_string(),
    }
}

/// The common ground of DynamoDB table names (`[A-Za-z0-9_.-]`, 3–255) and SQS queue names
/// (`[A-Za-z0-9_-]`, 1–80 including `.fifo`).
fn check_prefix(prefix: &str) -> Result<(), ProvisionError> {
    let invalid = |reason| ProvisionError::InvalidPrefix {
        prefix: prefix.to_owned(),
        reason,
    };
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            "use only A-Z, a-z, 0-9, '-' and '_' (SQS allows no other)",
        ));
    }
    if prefix.len() > 40 {
        return Err(invalid(
            "at most 40 characters, so queue names stay within 80",
        ));
    }
    Ok(())
}

fn parse_table(logical_id: &str, properties: &Mapping) -> Result<TableSpec, ProvisionError> {
    let mut table = TableSpec {
        logical_id: logical_id.to_owned(),
        key_schema: Vec::new(),
        attribute_definitions: Vec::new(),
        global_secondary_indexes: Vec::new(),
        ttl_attribute: None,
    };
    for (key, value) in properties {
        let property = key
            .as_str()
            .ok_or_else(|| unsupported(logical_id, "?", "a property name is not a string"))?;
        match property {
            "KeySchema" => table.key_schema = parse_key_schema(logical_id, property, value)?,
            "AttributeDefinitions" => {
                for item in sequence(logical_id, property, value)? {
                    table.attribute_definitions.push(AttributeSpec {
                        attribute_name: string_field(logical_id, property, item, "AttributeName")?,
                        attribute_type: one_of(
                            logical_id,
                            property,
                            item,
                            "AttributeType",
                            &["S", "N", "B"],
                        )?,
                    });
                }
            }
            "GlobalSecondaryIndexes" => {
                for item in sequence(logical_id, property, value)? {
                    table
                        .global_secondary_indexes
                        .push(parse_index(logical_id, property, item)?);
                }
            }
            "TimeToLiveSpecification" => {
                let attribute = string_field(logical_id, property, value, "AttributeName")?;
                let enabled = field(value, "Enabled")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| {
                        unsupported(logical_id, property, "Enabled must be true or false")
                    })?;
                table.ttl_attribute = enabled.then_some(attribute);
            }
            "BillingMode" => {
                if value.as_str() != Some("PAY_PER_REQUEST") {
                    return Err(unsupported(
                        logical_id,
                        property,
                        "only PAY_PER_REQUEST is provisioned locally",
                    ));
                }
            }
            _ if TABLE_PROPERTIES_SKIPPED.contains(&property) => {}
            _ => return Err(unsupported(logical_id, property, "not supported yet")),
        }
    }
    if table.key_schema.is_empty() {
        return Err(unsupported(logical_id, "KeySchema", "missing or empty"));
    }
    for element in table.key_schema.iter().chain(
        table
            .global_secondary_indexes
            .iter()
            .flat_map(|i| &i.key_schema),
    ) {
        if !table
            .attribute_definitions
            .iter()
            .any(|a| a.attribute_name == element.attribute_name)
        {
            return Err(unsupported(
                logical_id,
                "AttributeDefinitions",
                &format!("key attribute {} is not defined", element.attribute_name),
            ));
        }
    }
    Ok(table)
}

fn parse_index(
    logical_id: &str,
    property: &str,
    item: &Value,
) -> Result<IndexSpec, ProvisionError> {
    let key_schema = field(item, "KeySchema")
        .ok_or_else(|| unsupported(logical_id, property, "an index lacks KeySchema"))
        .and_then(|value| parse_key_schema(logical_id, property, value))?;
    let projection = field(item, "Projection")
        .ok_or_else(|| unsupported(logical_id, property, "an index lacks Projection"))?;
    let non_key_attributes = match field(projection, "NonKeyAttributes") {
        None => Vec::new(),
        Some(list) => sequence(logical_id, property, list)?
            .iter()
            .map(|name| {
                name.as_str().map(str::to_owned).ok_or_else(|| {
                    unsupported(logical_id, property, "NonKeyAttributes must be strings")
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(IndexSpec {
        index_name: string_field(logical_id, property, item, "IndexName")?,
        key_schema,
        projection_type: one_of(
            logical_id,
            property,
            projection,
            "ProjectionType",
            &["ALL", "KEYS_ONLY", "INCLUDE"],
        )?,
        non_key_attributes,
    })
}

fn parse_key_schema(
    logical_id: &str,
    property: &str,
    value: &Value,
) -> Result<Vec<KeyElement>, ProvisionError> {
    sequence(logical_id, property, value)?
        .iter()
        .map(|item| {
            Ok(KeyElement {
                attribute_name: string_field(logical_id, property, item, "AttributeName")?,
                key_type: one_of(logical_id, property, item, "KeyType", &["HASH", "RANGE"])?,
            })
        })
        .collect()
}

fn parse_queue(logical_id: &str, properties: &Mapping) -> Result<QueueSpec, ProvisionError> {
    let mut attributes = BTreeMap::new();
    for (key, value) in properties {
        let property = key
            .as_str()
            .ok_or_else(|| unsupported(logical_id, "?", "a property name is not a string"))?;
        if QUEUE_PROPERTIES_SKIPPED.contains(&property) {
            continue;
        }
        if !QUEUE_ATTRIBUTES.contains(&property) {
            return Err(unsupported(logical_id, property, "not supported yet"));
        }
        let text = match value {
            Value::Bool(flag) => flag.to_string(),
            Value::Number(number) => number.to_string(),
            Value::String(text) => text.clone(),
            Value::Tagged(_) => {
                return Err(unsupported(
                    logical_id,
                    property,
                    "an intrinsic function that only CloudFormation can resolve",
                ));
            }
            _ => return Err(unsupported(logical_id, property, "not a scalar")),
        };
        attributes.insert(property.to_owned(), text);
    }
    Ok(QueueSpec {
        logical_id: logical_id.to_owned(),
        attributes,
    })
}

fn field<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    value.as_mapping()?.get(name)
}

fn sequence<'v>(
    logical_id: &str,
    property: &str,
    value: &'v Value,
) -> Result<&'v Vec<Value>, ProvisionError> {
    value
        .as_sequence()
        .ok_or_else(|| unsupported(logical_id, property, "expected a list"))
}

fn string_field(
    logical_id: &str,
    property: &str,
    value: &Value,
    name: &str,
) -> Result<String, ProvisionError> {
    match field(value, name) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Tagged(_)) => Err(unsupported(
            logical_id,
            property,
            &format!("{name} is an intrinsic function that only CloudFormation can resolve"),
        )),
        _ => Err(unsupported(
            logical_id,
            property,
            &format!("{name} must be a string"),
        )),
    }
}

fn one_of(
    logical_id: &str,
    property: &str,
    value: &Value,
    name: &str,
    allowed: &[&str],
) -> Result<String, ProvisionError> {
    let text = string_field(logical_id, property, value, name)?;
    if allowed.contains(&text.as_str()) {
        Ok(text)
    } else {
        Err(unsupported(
            logical_id,
            property,
            &format!("{name} {text:?} is not one of {allowed:?}"),
        ))
    }
}

fn unsupported(logical_id: &str, property: &str, reason: &str) -> ProvisionError {
    ProvisionError::Unsupported {
        logical_id: logical_id.to_owned(),
        property: property.to_owned(),
        reason: reason.to_owned(),
    }
}

/// `DeadLetters` → `DEAD_LETTERS`, `SQSQueue` → `SQS_QUEUE`, `Events2` → `EVENTS2`.
fn screaming_snake(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    let mut out = String::with_capacity(id.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            let previous = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if previous.is_ascii_lowercase()
                || previous.is_ascii_digit()
                || (previous.is_ascii_uppercase() && next_is_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Quotes a value for a POSIX shell only when it needs it (queue URLs and table names never do
/// today, but a prefix is the operator's choice).
fn shell_quote(value: &str) -> String {
    let plain = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain && !value.is_empty() {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DeploymentSpec {
        DeploymentSpec::deployment().expect("template.yaml parses")
    }

    #[test]
    fn the_deployment_template_declares_the_six_tables_and_the_queue() {
        let spec = spec();
        let ids: Vec<_> = spec.tables.iter().map(|t| t.logical_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "EventsTable",
                "CountersTable",
                "CollectionsTable",
                "DedupeTable",
                "DeadLettersTable",
                "KeysTable"
            ]
        );
        let queues: Vec<_> = spec.queues.iter().map(|q| q.logical_id.as_str()).collect();
        assert_eq!(queues, ["DeadLetterQueue"]);
    }

    #[test]
    fn key_schemas_and_ttl_follow_architecture_md() {
        let spec = spec();
        let pk_sk = vec![
            KeyElement {
                attribute_name: "pk".into(),
                key_type: "HASH".into(),
            },
            KeyElement {
                attribute_name: "sk".into(),
                key_type: "RANGE".into(),
            },
        ];
        for id in [
            "EventsTable",
            "CountersTable",
            "CollectionsTable",
            "DeadLettersTable",
            "KeysTable",
        ] {
            let table = spec.table(id).expect("declared");
            assert_eq!(table.key_schema, pk_sk, "{id}");
            assert!(
                table
                    .attribute_definitions
                    .iter()
                    .all(|a| a.attribute_type == "S"),
                "{id}"
            );
            if id != "DeadLettersTable" {
                assert!(table.global_secondary_indexes.is_empty(), "{id}");
            }
        }
        // A whole project's dead letters are listed through an index keyed like the table.
        let by_project = &spec
            .table("DeadLettersTable")
            .expect("declared")
            .global_secondary_indexes;
        assert_eq!(by_project.len(), 1);
        assert_eq!(by_project[0].index_name, "by_project");
        assert_eq!(by_project[0].key_schema[0].attribute_name, "project_id");
        assert_eq!(by_project[0].key_schema[1].attribute_name, "sk");
        let dedupe = spec.table("DedupeTable").expect("declared");
        assert_eq!(dedupe.key_schema, pk_sk[..1]);
        assert_eq!(dedupe.ttl_attribute.as_deref(), Some("expires_at"));
        assert_eq!(
            spec.table("DeadLettersTable")
                .and_then(|t| t.ttl_attribute.as_deref()),
            Some("expires_at")
        );
        assert_eq!(
            spec.table("EventsTable")
                .and_then(|t| t.ttl_attribute.clone()),
            None
        );
        assert_eq!(
            spec.table("KeysTable")
                .and_then(|t| t.ttl_attribute.clone()),
            None
        );

        let queue = spec.queue("DeadLetterQueue").expect("declared");
        assert_eq!(
            queue
                .attributes
                .get("MessageRetentionPeriod")
                .map(String::as_str),
            Some("1209600")
        );
        // Encrypted under the stack's key when deployed; no KMS key exists locally.
        assert!(!queue.attributes.contains_key("KmsMasterKeyId"));
        assert!(
            !queue
                .attributes
                .contains_key("KmsDataKeyReusePeriodSeconds")
        );
        assert!(!queue.is_fifo());
    }

    #[test]
    fn env_vars_follow_the_template_convention() {
        let spec = spec();
        let vars: Vec<_> = spec.tables.iter().map(TableSpec::env_var).collect();
        assert_eq!(
            vars,
            [
                "EVENTS_TABLE",
                "COUNTERS_TABLE",
                "COLLECTIONS_TABLE",
                "DEDUPE_TABLE",
                "DEAD_LETTERS_TABLE",
                "KEYS_TABLE"
            ]
        );
        assert_eq!(spec.queues[0].env_var(), "DEAD_LETTER_QUEUE_URL");
        assert_eq!(screaming_snake("SQSQueue"), "SQS_QUEUE");
        assert_eq!(screaming_snake("Events2Archive"), "EVENTS2_ARCHIVE");
        assert_eq!(screaming_snake("Keys"), "KEYS");
    }

    #[test]
    fn the_functions_read_the_variables_provisioning_publishes() {
        // The template's functions and the local stack must agree on every variable name.
        let template: Value = serde_yaml::from_str(DEPLOYMENT_TEMPLATE).expect("yaml");
        let spec = spec();
        let published: Vec<String> = spec
            .tables
            .iter()
            .map(TableSpec::env_var)
            .chain(spec.queues.iter().map(QueueSpec::env_var))
            .collect();
        let resources = template["Resources"].as_mapping().expect("resources");
        let mut seen = 0;
        for (_, resource) in resources {
            if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
                continue;
            }
            let variables = resource["Properties"]["Environment"]["Variables"]
                .as_mapping()
                .expect("functions have variables");
            for (name, value) in variables {
                let name = name.as_str().expect("string");
                let Value::Tagged(tagged) = value else {
                    continue;
                };
                let target = tagged.value.as_str().expect("!Ref names a resource");
                if let Some(table) = spec.table(target) {
                    assert_eq!(name, table.env_var());
                } else if let Some(queue) = spec.queue(target) {
                    assert_eq!(name, queue.env_var());
                } else {
                    // The rest are parameters, each under its one variable name.
                    let expected = match target {
                        "KeyPepperSecretArn" => "KEY_PEPPER",
                        "GeoIpDatabasePath" => "GEOIP_DATABASE",
                        other => panic!(
                            "{name} reads {other}, which is neither a resource nor a known parameter"
                        ),
                    };
                    assert_eq!(name, expected);
                }
                seen += usize::from(published.iter().any(|p| p == name));
            }
        }
        assert!(
            seen >= published.len(),
            "every resource is read by some function"
        );
    }

    #[test]
    fn tags_elsewhere_are_tolerated_and_gsis_are_read() {
        let template = r#"
Parameters:
  Stage: {Type: String}
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Environment: {Variables: {T: !Ref OrdersTable, Q: !GetAtt Jobs.QueueName}}
      Policies: [{DynamoDBCrudPolicy: {TableName: !Sub "${OrdersTable}"}}]
  OrdersTable:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "${Stage}-orders"
      Tags: [{Key: stage, Value: !Ref Stage}]
      AttributeDefinitions:
        - {AttributeName: id, AttributeType: S}
        - {AttributeName: customer, AttributeType: S}
        - {AttributeName: placed, AttributeType: N}
      KeySchema: [{AttributeName: id, KeyType: HASH}]
      GlobalSecondaryIndexes:
        - IndexName: by-customer
          KeySchema:
            - {AttributeName: customer, KeyType: HASH}
            - {AttributeName: placed, KeyType: RANGE}
          Projection: {ProjectionType: INCLUDE, NonKeyAttributes: [total]}
      TimeToLiveSpecification: {AttributeName: gone_at, Enabled: false}
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${Stage}-jobs.fifo"
      FifoQueue: true
      VisibilityTimeout: 60
"#;
        let spec = DeploymentSpec::parse(template).expect("parses");
        let table = &spec.tables[0];
        assert_eq!(table.env_var(), "ORDERS_TABLE");
        assert_eq!(table.ttl_attribute, None);
        assert_eq!(table.global_secondary_indexes.len(), 1);
        let index = &table.global_secondary_indexes[0];
        assert_eq!(index.index_name, "by-customer");
        assert_eq!(index.key_schema[1].attribute_name, "placed");
        assert_eq!(index.projection_type, "INCLUDE");
        assert_eq!(index.non_key_attributes, ["total"]);
        let queue = &spec.queues[0];
        assert!(queue.is_fifo());
        assert_eq!(queue.physical_name("t-"), "t-Jobs.fifo");
        assert_eq!(queue.env_var(), "JOBS_URL");
        assert_eq!(
            queue
                .attributes
                .get("VisibilityTimeout")
                .map(String::as_str),
            Some("60")
        );
        assert!(!queue.attributes.contains_key("QueueName"));
    }

    #[test]
    fn what_cannot_be_reproduced_locally_is_refused_by_name() {
        let cases = [
            (
                "T: {Type: AWS::DynamoDB::Table, Properties: {KeySchema: [{AttributeName: a, KeyType: HASH}], AttributeDefinitions: [{AttributeName: a, AttributeType: S}], StreamSpecification: {StreamViewType: NEW_IMAGE}}}",
                "StreamSpecification",
            ),
            (
                "T: {Type: AWS::DynamoDB::Table, Properties: {KeySchema: [{AttributeName: !Ref X, KeyType: HASH}], AttributeDefinitions: []}}",
                "KeySchema",
            ),
            (
                "T: {Type: AWS::DynamoDB::Table, Properties: {KeySchema: [{AttributeName: a, KeyType: HASH}], AttributeDefinitions: []}}",
                "AttributeDefinitions",
            ),
            (
                "T: {Type: AWS::DynamoDB::Table, Properties: {KeySchema: [{AttributeName: a, KeyType: SORT}], AttributeDefinitions: [{AttributeName: a, AttributeType: S}]}}",
                "KeySchema",
            ),
            (
                "T: {Type: AWS::DynamoDB::Table, Properties: {BillingMode: PROVISIONED, KeySchema: [{AttributeName: a, KeyType: HASH}], AttributeDefinitions: [{AttributeName: a, AttributeType: S}]}}",
                "BillingMode",
            ),
            (
                "Q: {Type: AWS::SQS::Queue, Properties: {RedrivePolicy: {deadLetterTargetArn: !GetAtt D.Arn, maxReceiveCount: 3}}}",
                "RedrivePolicy",
            ),
            (
                "Q: {Type: AWS::SQS::Queue, Properties: {VisibilityTimeout: !Ref Timeout}}",
                "VisibilityTimeout",
            ),
        ];
        for (resource, property) in cases {
            let template = format!("Resources:\n  {resource}\n");
            match DeploymentSpec::parse(&template) {
                Err(ProvisionError::Unsupported { property: p, .. }) => {
                    assert_eq!(p, property, "{resource}")
                }
                other => panic!("{resource}: expected Unsupported, got {other:?}"),
            }
        }
        let error = DeploymentSpec::parse("Resources: [").expect_err("bad yaml");
        assert!(matches!(error, ProvisionError::Template { .. }), "{error}");
        let error = DeploymentSpec::parse("Outputs: {}").expect_err("no resources");
        assert!(error.to_string().contains("Resources"), "{error}");
        let clash = "Resources:\n  X: {Type: AWS::DynamoDB::Table, Properties: {KeySchema: [{AttributeName: a, KeyType: HASH}], AttributeDefinitions: [{AttributeName: a, AttributeType: S}]}}\n  \
                     XTable: {Type: AWS::DynamoDB::Table, Properties: {KeySchema: [{AttributeName: a, KeyType: HASH}], AttributeDefinitions: [{AttributeName: a, AttributeType: S}]}}\n";
        let error = DeploymentSpec::parse(clash).expect_err("two X_TABLE");
        assert!(error.to_string().contains("X_TABLE"), "{error}");
    }

    #[test]
    fn prefixes_and_exports() {
        assert!(check_prefix("keen-test_1-").is_ok());
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("a.b").is_err());
        assert!(check_prefix("a b").is_err());
        assert!(check_prefix(&"x".repeat(41)).is_err());
        let names = ProvisionedNames {
            without_ttl: Vec::new(),
            names: BTreeMap::from([
                ("KEYS_TABLE".to_owned(), "t-KeysTable".to_owned()),
                (
                    "DEAD_LETTER_QUEUE_URL".to_owned(),
                    "http://127.0.0.1:5000/123456789012/t-DeadLetterQueue".to_owned(),
                ),
                ("ODD".to_owned(), "it's".to_owned()),
            ]),
        };
        assert_eq!(
            names.to_exports(),
            "export DEAD_LETTER_QUEUE_URL=http://127.0.0.1:5000/123456789012/t-DeadLetterQueue\n\
             export KEYS_TABLE=t-KeysTable\n\
             export ODD='it'\\''s'\n"
        );
        assert_eq!(names.get("KEYS_TABLE"), Some("t-KeysTable"));
    }
}
