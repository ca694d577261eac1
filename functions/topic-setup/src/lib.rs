//! The `InboundTopic` custom resource of template.yaml: creates the inbound topic on MSK and
//! the Kafka ACLs that make the gateway its only writer and the event source mapping its only
//! reader, and tells CloudFormation the SASL/SCRAM bootstrap brokers for the gateway.
//!
//! Contract:
//! - Create and Update make the topic and ACLs match the properties (idempotent; an update
//!   re-applies configs, adds partitions, removes ACLs of identities that were renamed).
//!   Partitions are never removed: asking for fewer fails the update with the reason.
//! - Delete succeeds without touching the cluster: the topic holds customers' data, and a
//!   stack being deleted may already have removed the cluster.
//! - CloudFormation always gets an answer (PUT to the ResponseURL), SUCCESS or FAILED with the
//!   reason, also on a panic or when the function is about to time out, so no stack hangs.
//! - Authentication is MSK IAM (SASL/OAUTHBEARER, port 9098) with the function's role: MSK has
//!   no super.users, and with allow.everyone.if.no.acl.found=false no SCRAM user could create
//!   the first ACL; ACLs do not apply to IAM principals, whose rights the role's policy names.

pub mod https;
pub mod iam;
pub mod kafka;
pub mod spec;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spec::TopicSpec;
use std::time::SystemTime;
use tokio_rustls::TlsConnector;

/// A CloudFormation custom resource request (the fields this resource reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceRequest {
    pub request_type: String,
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(default)]
    pub physical_resource_id: Option<String>,
    #[serde(default)]
    pub resource_properties: Value,
    #[serde(default)]
    pub old_resource_properties: Option<Value>,
}

/// The answer PUT to the ResponseURL.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceResponse {
    pub status: &'static str,
    pub reason: String,
    pub physical_resource_id: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// CloudFormation caps the whole response at 4 KiB.
const MAX_REASON_CHARS: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid properties: {0}")]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Signing(#[from] iam::SigningError),
    #[error(transparent)]
    Https(#[from] https::HttpsError),
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
    #[error("GetBootstrapBrokers answered HTTP {status}: {body}")]
    BootstrapBrokers { status: u16, body: String },
    #[error("the cluster has no {0} bootstrap brokers: enable that authentication on it")]
    NoBrokers(&'static str),
    #[error("unknown RequestType {0:?}")]
    RequestType(String),
}

/// The bootstrap strings of a cluster, by listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapBrokers {
    pub sasl_scram: String,
    pub sasl_iam: String,
}

impl BootstrapBrokers {
    /// Reads MSK's GetBootstrapBrokers answer (keys compared without regard to case).
    pub fn from_response(body: &Value) -> Result<Self, SetupError> {
        let field = |name: &'static str| {
            body.as_object()
                .and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .and_then(|(_, v)| v.as_str())
                })
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or(SetupError::NoBrokers(name))
        };
        Ok(BootstrapBrokers {
            sasl_scram: field("BootstrapBrokerStringSaslScram")?,
            sasl_iam: field("BootstrapBrokerStringSaslIam")?,
        })
    }

    /// `host:port` pairs of the IAM listener.
    pub fn iam_brokers(&self) -> Vec<(String, u16)> {
        self.sasl_iam
            .split(',')
            .filter_map(|b| {
                let (host, port) = b.trim().rsplit_once(':')?;
                Some((host.to_owned(), port.parse().ok()?))
            })
            .collect()
    }
}

/// What a resource handler returns: its physical id and the attributes `!GetAtt` reads.
pub struct Outcome {
    pub physical_resource_id: String,
    pub data: Option<Value>,
}

/// Handles one request; does not answer CloudFormation (see [`respond`]).
pub async fn handle(
    request: &CustomResourceRequest,
    tls: &TlsConnector,
) -> Result<Outcome, SetupError> {
    match request.request_type.as_str() {
        "Delete" => {
            tracing::info!("delete: the topic and its ACLs are kept (they hold and guard data)");
            Ok(Outcome {
                physical_resource_id: fallback_physical_id(request),
                data: None,
            })
        }
        "Create" | "Update" => {
            let spec = TopicSpec::from_properties(&request.resource_properties)?;
            // Only the old identities of the same topic on the same cluster are cleaned up.
            let previous = request
                .old_resource_properties
                .as_ref()
                .and_then(|old| TopicSpec::from_properties(old).ok())
                .filter(|old| old.physical_id() == spec.physical_id());
            let brokers = set_up(&spec, previous.as_ref(), tls).await?;
            Ok(Outcome {
                physical_resource_id: spec.physical_id(),
                data: Some(json!({
                    "Topic": spec.topic,
                    "BootstrapBrokersSaslScram": brokers.sasl_scram,
                })),
            })
        }
        other => Err(SetupError::RequestType(other.to_owned())),
    }
}

/// The physical id to answer with when there is no spec to derive it from.
pub fn fallback_physical_id(request: &CustomResourceRequest) -> String {
    request
        .physical_resource_id
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("{}-{}", request.logical_resource_id, request.request_id))
}

async fn set_up(
    spec: &TopicSpec,
    previous: Option<&TopicSpec>,
    tls: &TlsConnector,
) -> Result<BootstrapBrokers, SetupError> {
    let credentials = iam::credentials_from_env()?;
    let region = spec.region();
    let (url, headers) =
        iam::bootstrap_brokers_request(&credentials, region, &spec.cluster_arn, SystemTime::now())?;
    let mut header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    header_refs.push(("Accept", "application/json"));
    let (status, body) = https::request(tls, "GET", &url, &header_refs, b"").await?;
    if status != 200 {
        return Err(SetupError::BootstrapBrokers {
            status,
            body: String::from_utf8_lossy(&body).chars().take(300).collect(),
        });
    }
    let brokers =
        BootstrapBrokers::from_response(&serde_json::from_slice(&body).unwrap_or(Value::Null))?;

    let login = || -> Result<Vec<u8>, SetupError> {
        let token = iam::msk_auth_token(&credentials, region, SystemTime::now())?;
        Ok(iam::oauthbearer_client_response(&token))
    };
    let mut last_error = None;
    let mut broker = None;
    for (host, port) in brokers.iam_brokers() {
        match kafka::Broker::connect(tls, &host, port, login()?).await {
            Ok(connected) => {
                broker = Some(connected);
                break;
            }
            Err(error) => {
                tracing::warn!(%host, %error, "broker unavailable, trying the next");
                last_error = Some(error);
            }
        }
    }
    let mut broker = match (broker, last_error) {
        (Some(broker), _) => broker,
        (None, Some(error)) => return Err(error.into()),
        (None, None) => return Err(SetupError::NoBrokers("BootstrapBrokerStringSaslIam")),
    };
    let state = kafka::describe(&mut broker, &spec.topic).await?;
    // ZooKeeper-mode brokers take topic changes only at the controller; KRaft brokers forward.
    if let Some((host, port)) = state.controller {
        broker = kafka::Broker::connect(tls, &host, port, login()?).await?;
    }
    kafka::ensure_topic(&mut broker, spec, state.partitions).await?;
    kafka::create_acls(&mut broker, &spec.acls()).await?;
    if let Some(previous) = previous {
        kafka::delete_acls(&mut broker, &spec.stale_acls(previous)).await?;
    }
    Ok(brokers)
}

/// The response for `result`.
pub fn response(
    request: &CustomResourceRequest,
    result: Result<Outcome, String>,
) -> CustomResourceResponse {
    let (status, reason, physical_resource_id, data) = match result {
        Ok(outcome) => (
            "SUCCESS",
            "done".to_owned(),
            outcome.physical_resource_id,
            outcome.data,
        ),
        Err(reason) => (
            "FAILED",
            reason.chars().take(MAX_REASON_CHARS).collect(),
            fallback_physical_id(request),
            None,
        ),
    };
    CustomResourceResponse {
        status,
        reason,
        physical_resource_id,
        stack_id: request.stack_id.clone(),
        request_id: request.request_id.clone(),
        logical_resource_id: request.logical_resource_id.clone(),
        data,
    }
}

/// PUTs the answer to CloudFormation's presigned URL, retrying a few times: an unanswered
/// request leaves the stack waiting for an hour.
pub async fn respond(
    tls: &TlsConnector,
    response_url: &str,
    response: &CustomResourceResponse,
) -> Result<(), https::HttpsError> {
    let body = serde_json::to_vec(response).unwrap_or_default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        // The presigned URL was signed with an empty Content-Type.
        let result = https::request(tls, "PUT", response_url, &[("Content-Type", "")], &body).await;
        match result {
            Ok((status, _)) if (200..300).contains(&status) => return Ok(()),
            Ok((status, body)) if attempt < 4 => tracing::warn!(
                status,
                body = %String::from_utf8_lossy(&body),
                "CloudFormation response not accepted; retrying"
            ),
            Err(error) if attempt < 4 => {
                tracing::warn!(%error, "CloudFormation response not sent; retrying")
            }
            Ok((status, body)) => {
                return Err(https::HttpsError::Malformed(format!(
                    "ResponseURL answered {status}: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            Err(error) => return Err(error),
        }
        tokio::time::sleep(std::time::Duration::from_secs(2 * attempt)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: &str) -> CustomResourceRequest {
        serde_json::from_value(json!({
            "RequestType": kind,
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:topic-setup",
            "ResponseURL": "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x?sig=1",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/keen/guid",
            "RequestId": "req-1",
            "ResourceType": "Custom::InboundTopic",
            "LogicalResourceId": "InboundTopic",
            "PhysicalResourceId": "arn:aws:kafka:us-east-1:123456789012:cluster/c/u/keen-inbound",
            "ResourceProperties": {"ClusterArn": "not checked on delete"}
        }))
        .expect("a CloudFormation request")
    }

    #[tokio::test]
    async fn delete_succeeds_without_touching_the_cluster() {
        let tls = https::connector().expect("system roots");
        let request = request("Delete");
        let outcome = handle(&request, &tls).await.expect("delete succeeds");
        let answer = response(&request, Ok(outcome));
        assert_eq!(answer.status, "SUCCESS");
        // The same physical id, or CloudFormation would think the resource was replaced.
        assert_eq!(
            answer.physical_resource_id,
            "arn:aws:kafka:us-east-1:123456789012:cluster/c/u/keen-inbound"
        );
    }

    #[tokio::test]
    async fn a_bad_create_fails_with_the_reason_and_a_physical_id() {
        let tls = https::connector().expect("system roots");
        let mut request = request("Create");
        request.physical_resource_id = None;
        let error = handle(&request, &tls)
            .await
            .err()
            .expect("invalid properties");
        let answer = response(&request, Err(error.to_string()));
        assert_eq!(answer.status, "FAILED");
        assert!(answer.reason.contains("ClusterArn"), "{}", answer.reason);
        assert_eq!(answer.physical_resource_id, "InboundTopic-req-1");
        let body = serde_json::to_value(&answer).expect("json");
        for key in [
            "Status",
            "Reason",
            "PhysicalResourceId",
            "StackId",
            "RequestId",
            "LogicalResourceId",
        ] {
            assert!(body.get(key).is_some(), "{key}");
        }
        assert!(body.get("Data").is_none());
    }

    #[test]
    fn bootstrap_brokers_from_the_msk_answer() {
        let body = json!({
            "bootstrapBrokerStringSaslScram": "b-1.c.kafka.us-east-1.amazonaws.com:9096,b-2.c.kafka.us-east-1.amazonaws.com:9096",
            "bootstrapBrokerStringSaslIam": "b-1.c.kafka.us-east-1.amazonaws.com:9098,b-2.c.kafka.us-east-1.amazonaws.com:9098"
        });
        let brokers = BootstrapBrokers::from_response(&body).expect("both listeners");
        assert_eq!(
            brokers.iam_brokers(),
            [
                ("b-1.c.kafka.us-east-1.amazonaws.com".to_owned(), 9098),
                ("b-2.c.kafka.us-east-1.amazonaws.com".to_owned(), 9098)
            ]
        );
        assert!(brokers.sasl_scram.ends_with(":9096"));
        let error = BootstrapBrokers::from_response(&json!({"bootstrapBrokerStringTls": "x:9094"}))
            .expect_err("no SCRAM listener");
        assert!(error.to_string().contains("SaslScram"), "{error}");
    }
}
