//! The Kafka admin side: one authenticated TLS connection to a broker, the requests the
//! custom resource needs (Metadata, CreateTopics, IncrementalAlterConfigs, CreatePartitions,
//! CreateAcls, DeleteAcls), each encoded by kafka-protocol.

use crate::spec::{AclBinding, TopicSpec, code};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    BrokerId, CreateAclsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteAclsRequest,
    IncrementalAlterConfigsRequest, MetadataRequest, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest, TopicName,
    create_acls_request::AclCreation,
    create_partitions_request::CreatePartitionsTopic,
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    delete_acls_request::DeleteAclsFilter,
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const CLIENT_ID: &str = "keen-topic-setup";
const TIMEOUT_MS: i32 = 60_000;
const RESOURCE_TYPE_TOPIC_CONFIG: i8 = 2;
const CONFIG_OPERATION_SET: i8 = 0;
const HOST_ANY: &str = "*";

// Versions every MSK release with IAM auth (Kafka 2.7.1 and later) serves.
const METADATA_VERSION: i16 = 9;
const SASL_HANDSHAKE_VERSION: i16 = 1;
const SASL_AUTHENTICATE_VERSION: i16 = 2;
const CREATE_TOPICS_VERSION: i16 = 5;
const ALTER_CONFIGS_VERSION: i16 = 1;
const CREATE_PARTITIONS_VERSION: i16 = 2;
const CREATE_ACLS_VERSION: i16 = 2;
const DELETE_ACLS_VERSION: i16 = 2;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error(transparent)]
    Connect(#[from] crate::https::HttpsError),
    #[error("{broker}: {source}")]
    Io {
        broker: String,
        source: std::io::Error,
    },
    #[error("{broker}: cannot encode or decode {what}: {message}")]
    Protocol {
        broker: String,
        what: &'static str,
        message: String,
    },
    #[error("{what} refused: {error}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Refused {
        what: String,
        error: ResponseError,
        message: Option<String>,
    },
    #[error(
        "topic {topic} has {existing} partitions and the template asks for {wanted}: \
         Kafka cannot remove partitions; set InboundPartitions to at least {existing}"
    )]
    FewerPartitions {
        topic: String,
        existing: i32,
        wanted: i32,
    },
    #[error("the metadata names no broker {0} (the controller)")]
    NoController(i32),
}

fn check(what: impl Into<String>, code: i16, message: Option<&StrBytes>) -> Result<(), KafkaError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => Err(KafkaError::Refused {
            what: what.into(),
            error,
            message: message.map(|m| m.as_str().to_owned()),
        }),
    }
}

/// An authenticated connection to one broker.
pub struct Broker {
    address: String,
    stream: TlsStream<TcpStream>,
    correlation_id: i32,
}

impl Broker {
    /// Connects over TLS and logs in with SASL/OAUTHBEARER (MSK IAM).
    pub async fn connect(
        tls: &TlsConnector,
        host: &str,
        port: u16,
        sasl_client_response: Vec<u8>,
    ) -> Result<Self, KafkaError> {
        let stream = crate::https::connect(tls, host, port).await?;
        let mut broker = Broker {
            address: format!("{host}:{port}"),
            stream,
            correlation_id: 0,
        };
        let handshake = broker
            .call(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str("OAUTHBEARER")),
                SASL_HANDSHAKE_VERSION,
            )
            .await?;
        check(
            "SaslHandshake OAUTHBEARER (is IAM auth enabled on the cluster?)",
            handshake.error_code,
            None,
        )?;
        let authenticate = broker
            .call(
                &SaslAuthenticateRequest::default()
                    .with_auth_bytes(Bytes::from(sasl_client_response)),
                SASL_AUTHENTICATE_VERSION,
            )
            .await?;
        check(
            "SaslAuthenticate with the function's IAM role",
            authenticate.error_code,
            authenticate.error_message.as_ref(),
        )?;
        Ok(broker)
    }

    /// Sends one request and reads its response.
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, KafkaError> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header
            .encode(&mut frame, R::header_version(version))
            .and_then(|()| request.encode(&mut frame, version))
            .map_err(|e| self.protocol("the request", e))?;
        let length = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        let io = |broker: &str, source| KafkaError::Io {
            broker: broker.to_owned(),
            source,
        };
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| io(&self.address, e))?;
        self.stream
            .flush()
            .await
            .map_err(|e| io(&self.address, e))?;
        let length = self
            .stream
            .read_i32()
            .await
            .map_err(|e| io(&self.address, e))?;
        let mut body = vec![0; usize::try_from(length).unwrap_or(0)];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| io(&self.address, e))?;
        let mut body = Bytes::from(body);
        let response_header = ResponseHeader::decode(
            &mut body,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .map_err(|e| self.protocol("the response header", e))?;
        if response_header.correlation_id != self.correlation_id {
            return Err(self.protocol("the response", "correlation id mismatch"));
        }
        let response = R::Response::decode(&mut body, version)
            .map_err(|e| self.protocol("the response", e))?;
        if body.has_remaining() {
            tracing::debug!(left = body.remaining(), "response bytes not decoded");
        }
        Ok(response)
    }

    fn protocol(&self, what: &'static str, message: impl ToString) -> KafkaError {
        KafkaError::Protocol {
            broker: self.address.clone(),
            what,
            message: message.to_string(),
        }
    }
}

/// What the cluster says about the topic, and where its controller listens.
pub struct TopicState {
    pub partitions: Option<i32>,
    pub controller: Option<(String, u16)>,
}

pub async fn describe(broker: &mut Broker, topic: &str) -> Result<TopicState, KafkaError> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_owned())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let metadata = broker.call(&request, METADATA_VERSION).await?;
    let controller = metadata
        .brokers
        .iter()
        .find(|b| b.node_id == metadata.controller_id)
        .map(|b| (b.host.as_str().to_owned(), b.port as u16));
    if controller.is_none() && metadata.controller_id != BrokerId(-1) {
        return Err(KafkaError::NoController(metadata.controller_id.0));
    }
    let partitions = match metadata.topics.first() {
        Some(t) if t.error_code == 0 => Some(t.partitions.len() as i32),
        Some(t) if t.error_code == ResponseError::UnknownTopicOrPartition.code() => None,
        Some(t) => {
            check(format!("Metadata for {topic}"), t.error_code, None)?;
            None
        }
        None => None,
    };
    Ok(TopicState {
        partitions,
        controller,
    })
}

/// Creates the topic, or brings an existing one to the spec (configs, more partitions).
pub async fn ensure_topic(
    broker: &mut Broker,
    spec: &TopicSpec,
    existing_partitions: Option<i32>,
) -> Result<(), KafkaError> {
    let name = || TopicName(StrBytes::from_string(spec.topic.clone()));
    if existing_partitions.is_none() {
        let topic = CreatableTopic::default()
            .with_name(name())
            .with_num_partitions(spec.partitions)
            .with_replication_factor(spec.replication_factor)
            .with_configs(
                spec.configs()
                    .into_iter()
                    .map(|(key, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_static_str(key))
                            .with_value(Some(StrBytes::from_string(value)))
                    })
                    .collect(),
            );
        let response = broker
            .call(
                &CreateTopicsRequest::default()
                    .with_topics(vec![topic])
                    .with_timeout_ms(TIMEOUT_MS),
                CREATE_TOPICS_VERSION,
            )
            .await?;
        for result in &response.topics {
            // Created meanwhile (a retried deploy): fall through to the update path below.
            if result.error_code != ResponseError::TopicAlreadyExists.code() {
                check(
                    format!("CreateTopics {}", spec.topic),
                    result.error_code,
                    result.error_message.as_ref(),
                )?;
                tracing::info!(topic = %spec.topic, partitions = spec.partitions, "topic created");
                return Ok(());
            }
        }
    }
    let resource = AlterConfigsResource::default()
        .with_resource_type(RESOURCE_TYPE_TOPIC_CONFIG)
        .with_resource_name(StrBytes::from_string(spec.topic.clone()))
        .with_configs(
            spec.configs()
                .into_iter()
                .map(|(key, value)| {
                    AlterableConfig::default()
                        .with_name(StrBytes::from_static_str(key))
                        .with_config_operation(CONFIG_OPERATION_SET)
                        .with_value(Some(StrBytes::from_string(value)))
                })
                .collect(),
        );
    let response = broker
        .call(
            &IncrementalAlterConfigsRequest::default().with_resources(vec![resource]),
            ALTER_CONFIGS_VERSION,
        )
        .await?;
    for result in &response.responses {
        check(
            format!("IncrementalAlterConfigs {}", spec.topic),
            result.error_code,
            result.error_message.as_ref(),
        )?;
    }
    let existing = existing_partitions.unwrap_or(spec.partitions);
    if existing > spec.partitions {
        return Err(KafkaError::FewerPartitions {
            topic: spec.topic.clone(),
            existing,
            wanted: spec.partitions,
        });
    }
    if existing < spec.partitions {
        let response = broker
            .call(
                &CreatePartitionsRequest::default()
                    .with_topics(vec![
                        CreatePartitionsTopic::default()
                            .with_name(name())
                            .with_count(spec.partitions),
                    ])
                    .with_timeout_ms(TIMEOUT_MS),
                CREATE_PARTITIONS_VERSION,
            )
            .await?;
        for result in &response.results {
            check(
                format!("CreatePartitions {}", spec.topic),
                result.error_code,
                result.error_message.as_ref(),
            )?;
        }
    }
    tracing::info!(topic = %spec.topic, partitions = spec.partitions, "topic up to date");
    Ok(())
}

/// Creates the ACLs (creating one that exists is a no-op in Kafka).
pub async fn create_acls(broker: &mut Broker, acls: &[AclBinding]) -> Result<(), KafkaError> {
    let creations = acls
        .iter()
        .map(|acl| {
            AclCreation::default()
                .with_resource_type(acl.resource_type)
                .with_resource_name(StrBytes::from_string(acl.resource_name.clone()))
                .with_resource_pattern_type(code::PATTERN_LITERAL)
                .with_principal(StrBytes::from_string(acl.principal.clone()))
                .with_host(StrBytes::from_static_str(HOST_ANY))
                .with_operation(acl.operation)
                .with_permission_type(code::PERMISSION_ALLOW)
        })
        .collect();
    let response = broker
        .call(
            &CreateAclsRequest::default().with_creations(creations),
            CREATE_ACLS_VERSION,
        )
        .await?;
    for (acl, result) in acls.iter().zip(&response.results) {
        check(
            format!("CreateAcls {acl:?}"),
            result.error_code,
            result.error_message.as_ref(),
        )?;
    }
    tracing::info!(count = acls.len(), "ACLs in place");
    Ok(())
}

/// Deletes exactly these ACLs.
pub async fn delete_acls(broker: &mut Broker, acls: &[AclBinding]) -> Result<(), KafkaError> {
    if acls.is_empty() {
        return Ok(());
    }
    let filters = acls
        .iter()
        .map(|acl| {
            DeleteAclsFilter::default()
                .with_resource_type_filter(acl.resource_type)
                .with_resource_name_filter(Some(StrBytes::from_string(acl.resource_name.clone())))
                .with_pattern_type_filter(code::PATTERN_LITERAL)
                .with_principal_filter(Some(StrBytes::from_string(acl.principal.clone())))
                .with_host_filter(Some(StrBytes::from_static_str(HOST_ANY)))
                .with_operation(acl.operation)
                .with_permission_type(code::PERMISSION_ALLOW)
        })
        .collect();
    let response = broker
        .call(
            &DeleteAclsRequest::default().with_filters(filters),
            DELETE_ACLS_VERSION,
        )
        .await?;
    for (acl, result) in acls.iter().zip(&response.filter_results) {
        check(
            format!("DeleteAcls {acl:?}"),
            result.error_code,
            result.error_message.as_ref(),
        )?;
    }
    tracing::info!(count = acls.len(), "stale ACLs removed");
    Ok(())
}
