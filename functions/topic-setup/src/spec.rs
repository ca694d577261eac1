//! What the inbound topic and its ACLs must be, read from the custom resource's properties.
//!
//! CloudFormation passes every property as a string; numbers are parsed and checked here, so a
//! template mistake fails the deploy with the property's name instead of reaching the cluster.

use serde_json::Value;

/// The least `max.message.bytes` the inbound topic may have: the customer's batch limit
/// (1,048,588 bytes) plus the gateway's 64 KiB for tenant headers, which is
/// `BACKING_MAX_MESSAGE_BYTES` in gateway/src/backing.rs.
pub const MIN_MAX_MESSAGE_BYTES: i64 = 1_048_588 + 64 * 1024;

/// Kafka's ACL codes (org.apache.kafka.common.acl / resource).
pub mod code {
    pub const RESOURCE_TOPIC: i8 = 2;
    pub const RESOURCE_GROUP: i8 = 3;
    pub const PATTERN_LITERAL: i8 = 3;
    pub const OPERATION_READ: i8 = 3;
    pub const OPERATION_WRITE: i8 = 4;
    pub const OPERATION_DESCRIBE: i8 = 8;
    pub const OPERATION_DESCRIBE_CONFIGS: i8 = 10;
    pub const PERMISSION_ALLOW: i8 = 3;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("property {0} is missing")]
    Missing(&'static str),
    #[error("property {name} = {value:?}: {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// The inbound topic and who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub cluster_arn: String,
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub min_insync_replicas: i64,
    pub retention_hours: i64,
    pub max_message_bytes: i64,
    /// `User:<scram username>` of the gateway: the only writer.
    pub writer: String,
    /// `User:<scram username>` of the event source mapping: the only reader.
    pub reader: String,
    /// The event source mapping's consumer group.
    pub reader_group: String,
}

/// One ALLOW ACL on a literal resource name, from any host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub principal: String,
    pub operation: i8,
}

impl TopicSpec {
    pub fn from_properties(properties: &Value) -> Result<Self, SpecError> {
        let text = |name: &'static str| -> Result<String, SpecError> {
            match properties.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                _ => Err(SpecError::Missing(name)),
            }
        };
        let number = |name: &'static str, min: i64, max: i64, expected: &'static str| {
            let value = text(name)?;
            value
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or(SpecError::Invalid {
                    name,
                    value,
                    expected,
                })
        };
        let principal = |name: &'static str| {
            let value = text(name)?;
            if value.starts_with("User:") && value.len() > 5 {
                Ok(value)
            } else {
                Err(SpecError::Invalid {
                    name,
                    value,
                    expected: "User:<name>",
                })
            }
        };
        let cluster_arn = text("ClusterArn")?;
        if !cluster_arn.starts_with("arn:") || !cluster_arn.contains(":cluster/") {
            return Err(SpecError::Invalid {
                name: "ClusterArn",
                value: cluster_arn,
                expected: "an MSK cluster ARN",
            });
        }
        let topic = text("Topic")?;
        if topic.len() > 249
            || !topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(SpecError::Invalid {
                name: "Topic",
                value: topic,
                expected: "a Kafka topic name",
            });
        }
        Ok(TopicSpec {
            cluster_arn,
            topic,
            partitions: number("Partitions", 1, 10_000, "1 to 10,000")? as i32,
            replication_factor: number("ReplicationFactor", 1, 16, "1 to 16")? as i16,
            min_insync_replicas: number("MinInsyncReplicas", 1, 16, "1 to 16")?,
            retention_hours: number("RetentionHours", 1, 100_000, "hours, at least 1")?,
            max_message_bytes: number(
                "MaxMessageBytes",
                MIN_MAX_MESSAGE_BYTES,
                i32::MAX.into(),
                "at least the gateway's backing record limit, 1,114,124 bytes",
            )?,
            writer: principal("WriterPrincipal")?,
            reader: principal("ReaderPrincipal")?,
            reader_group: text("ReaderGroup")?,
        })
    }

    /// The region, from the cluster ARN (`arn:aws:kafka:<region>:…`).
    pub fn region(&self) -> &str {
        self.cluster_arn.split(':').nth(3).unwrap_or_default()
    }

    /// Topic configuration set on create and re-applied on update.
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "retention.ms",
                (self.retention_hours * 3_600_000).to_string(),
            ),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            // Time-based retention only: a size cap would drop unread records in an outage.
            ("retention.bytes", "-1".to_owned()),
            ("cleanup.policy", "delete".to_owned()),
        ]
    }

    /// Only the gateway writes the topic, only the event source mapping reads it (with its
    /// group). With allow.everyone.if.no.acl.found=false nobody else may do either.
    pub fn acls(&self) -> Vec<AclBinding> {
        use code::*;
        let on_topic = |principal: &str, operation| AclBinding {
            resource_type: RESOURCE_TOPIC,
            resource_name: self.topic.clone(),
            principal: principal.to_owned(),
            operation,
        };
        let on_group = |operation| AclBinding {
            resource_type: RESOURCE_GROUP,
            resource_name: self.reader_group.clone(),
            principal: self.reader.clone(),
            operation,
        };
        let mut acls = vec![
            on_topic(&self.writer, OPERATION_WRITE),
            on_topic(&self.writer, OPERATION_DESCRIBE),
            on_topic(&self.reader, OPERATION_READ),
            on_topic(&self.reader, OPERATION_DESCRIBE),
            on_topic(&self.reader, OPERATION_DESCRIBE_CONFIGS),
            on_group(OPERATION_READ),
            on_group(OPERATION_DESCRIBE),
        ];
        acls.sort();
        acls
    }

    /// ACLs an update leaves behind (a renamed identity, group or topic): removed, so that an
    /// old identity does not keep its access.
    pub fn stale_acls(&self, previous: &TopicSpec) -> Vec<AclBinding> {
        let current = self.acls();
        previous
            .acls()
            .into_iter()
            .filter(|acl| !current.contains(acl))
            .collect()
    }

    /// The resource's identity: changing the cluster or the topic name is a new resource.
    pub fn physical_id(&self) -> String {
        format!("{}/{}", self.cluster_arn, self.topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn properties() -> Value {
        // As CloudFormation sends them: every value a string.
        json!({
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:x",
            "ClusterArn": "arn:aws:kafka:us-east-1:123456789012:cluster/keen-inbound/0b2c-4",
            "Topic": "keen-inbound",
            "Partitions": "24",
            "ReplicationFactor": "3",
            "MinInsyncReplicas": "2",
            "RetentionHours": "168",
            "MaxMessageBytes": "1114124",
            "WriterPrincipal": "User:keen-gateway",
            "ReaderPrincipal": "User:keen-ingest",
            "ReaderGroup": "keen-ingest"
        })
    }

    #[test]
    fn reads_the_template_properties() {
        let spec = TopicSpec::from_properties(&properties()).expect("valid");
        assert_eq!(spec.partitions, 24);
        assert_eq!(spec.replication_factor, 3);
        assert_eq!(spec.region(), "us-east-1");
        assert_eq!(
            spec.physical_id(),
            "arn:aws:kafka:us-east-1:123456789012:cluster/keen-inbound/0b2c-4/keen-inbound"
        );
        let configs = spec.configs();
        assert!(configs.contains(&("retention.ms", "604800000".to_owned())));
        assert!(configs.contains(&("max.message.bytes", "1114124".to_owned())));
        assert!(configs.contains(&("min.insync.replicas", "2".to_owned())));
    }

    #[test]
    fn a_record_limit_below_the_gateways_is_refused() {
        let mut props = properties();
        props["MaxMessageBytes"] = json!("1048588");
        let error = TopicSpec::from_properties(&props).expect_err("too small");
        assert!(error.to_string().contains("MaxMessageBytes"), "{error}");
        props["MaxMessageBytes"] = json!(1_200_000);
        assert!(TopicSpec::from_properties(&props).is_ok());
    }

    #[test]
    fn missing_and_malformed_properties_are_named() {
        for (name, bad) in [
            ("Partitions", json!("0")),
            ("Partitions", json!("many")),
            ("ClusterArn", json!("keen")),
            ("Topic", json!("bad topic")),
            ("WriterPrincipal", json!("keen-gateway")),
        ] {
            let mut props = properties();
            props[name] = bad;
            let error = TopicSpec::from_properties(&props).expect_err(name);
            assert!(error.to_string().contains(name), "{error}");
        }
        let mut props = properties();
        props.as_object_mut().expect("object").remove("ReaderGroup");
        assert_eq!(
            TopicSpec::from_properties(&props),
            Err(SpecError::Missing("ReaderGroup"))
        );
    }

    #[test]
    fn only_the_gateway_writes_and_only_the_mapping_reads() {
        use code::*;
        let spec = TopicSpec::from_properties(&properties()).expect("valid");
        let acls = spec.acls();
        let writes: Vec<_> = acls
            .iter()
            .filter(|a| a.operation == OPERATION_WRITE)
            .map(|a| a.principal.as_str())
            .collect();
        assert_eq!(writes, ["User:keen-gateway"]);
        let reads: Vec<_> = acls
            .iter()
            .filter(|a| a.operation == OPERATION_READ)
            .map(|a| (a.resource_type, a.principal.as_str()))
            .collect();
        assert_eq!(
            reads,
            [
                (RESOURCE_TOPIC, "User:keen-ingest"),
                (RESOURCE_GROUP, "User:keen-ingest")
            ]
        );
        assert!(acls.iter().all(|a| a.resource_name == "keen-inbound"
            || (a.resource_type == RESOURCE_GROUP && a.resource_name == "keen-ingest")));
    }

    #[test]
    fn a_renamed_identity_loses_its_acls() {
        let old = TopicSpec::from_properties(&properties()).expect("valid");
        let mut props = properties();
        props["WriterPrincipal"] = json!("User:gateway-2");
        let new = TopicSpec::from_properties(&props).expect("valid");
        let stale = new.stale_acls(&old);
        assert_eq!(stale.len(), 2);
        assert!(stale.iter().all(|a| a.principal == "User:keen-gateway"));
        assert!(old.stale_acls(&old).is_empty());
    }
}
