//! The answers that need no backing cluster: ApiVersions, Metadata, InitProducerId, and the
//! refusals of product.md §1.

use crate::api::ADVERTISED;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use keen_shared::collection::check_name;

/// The cluster id every instance announces.
pub const CLUSTER_ID: &str = "keen-inbound-gateway";

/// ApiVersions: the advertised table. `error_code` is UNSUPPORTED_VERSION for the KIP-511
/// fallback (the client asked for a version above ours; the answer is then encoded as v0).
/// Nothing else is set: old librdkafka misreads default-valued tagged fields, and
/// `kafka-protocol` writes only non-default ones.
pub fn api_versions(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            ADVERTISED
                .iter()
                .map(|&(api, min, max)| {
                    ApiVersion::default()
                        .with_api_key(api as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        )
}

/// Where the gateway is, as Metadata tells it.
#[derive(Debug, Clone)]
pub struct Broker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub partitions: i32,
}

/// Metadata: one broker (this gateway, as advertised), and every valid requested topic with the
/// configured partitions, all led by it. Topics exist for a project as soon as their name is
/// valid; the list of all topics is empty, since a topic is the project's own business.
pub fn metadata(broker: &Broker, request: &MetadataRequest, version: i16) -> MetadataResponse {
    let requested = match &request.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => topics.as_slice(),
        _ => &[],
    };
    let topics = requested
        .iter()
        .map(|topic| {
            let name = topic
                .name
                .as_ref()
                .map(|n| n.0.as_str().to_owned())
                .unwrap_or_default();
            let mut response = MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
            match check_name(&name) {
                Ok(()) => {
                    response.partitions = (0..broker.partitions)
                        .map(|index| {
                            MetadataResponsePartition::default()
                                .with_partition_index(index)
                                .with_leader_id(BrokerId(broker.node_id))
                                .with_leader_epoch(0)
                                .with_replica_nodes(vec![BrokerId(broker.node_id)])
                                .with_isr_nodes(vec![BrokerId(broker.node_id)])
                        })
                        .collect();
                }
                Err(_) => response.error_code = ResponseError::InvalidTopicException.code(),
            }
            response
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(broker.node_id))
                .with_host(StrBytes::from_string(broker.host.clone()))
                .with_port(broker.port),
        ])
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        // kafkajs needs a controller it knows: this gateway.
        .with_controller_id(BrokerId(broker.node_id))
        .with_topics(topics)
}

/// InitProducerId: a fresh random 63-bit producer id for an idempotent producer, or the same id
/// with the next epoch when the client asks to bump its own (KIP-360). Transactions are refused.
pub fn init_producer_id(request: &InitProducerIdRequest) -> InitProducerIdResponse {
    if request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.0.is_empty())
    {
        return InitProducerIdResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let (producer_id, epoch) = match (request.producer_id.0, request.producer_epoch) {
        (id, epoch) if id >= 0 && (0..i16::MAX - 1).contains(&epoch) => (id, epoch + 1),
        _ => (new_producer_id(), 0),
    };
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
}

/// A random non-negative 63-bit id: unique across instances without coordination.
fn new_producer_id() -> i64 {
    let mut bytes = [0u8; 8];
    // The OS random source failing leaves a time-based id, still unlikely to collide.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = crate::clock_ms().to_be_bytes();
    }
    (u64::from_be_bytes(bytes) >> 1) as i64
}

/// The refusal of a request the produce-only contract does not allow, with the named code of
/// product.md §1, shaped as the API's own response so clients report the code. `request` is
/// the decoded body for APIs whose answer echoes it, `None` for the rest.
pub fn refusal(api: ApiKey, request: Option<RequestKind>) -> Option<ResponseKind> {
    let topic_denied = ResponseError::TopicAuthorizationFailed.code();
    let group_denied = ResponseError::GroupAuthorizationFailed.code();
    let cluster_denied = ResponseError::ClusterAuthorizationFailed.code();
    let txn_denied = ResponseError::TransactionalIdAuthorizationFailed.code();
    let message = |text: &str| Some(StrBytes::from_string(text.to_owned()));
    const CONSUME: &str = "this cluster is produce-only: events are read through the query API";
    const ADMIN: &str = "topics need no creation or deletion: a valid topic name is a collection";
    Some(match (api, request) {
        // Per partition, as Kafka refuses an unauthorized topic: clients report partition
        // errors, while a top-level error alone is retried at once, forever (librdkafka and
        // kafka-python both spin on it).
        (ApiKey::Fetch, Some(RequestKind::Fetch(r))) => {
            let topics: Vec<_> = r
                .topics
                .into_iter()
                .map(|t| {
                    fetch_response::FetchableTopicResponse::default()
                        .with_topic(t.topic)
                        .with_topic_id(t.topic_id)
                        .with_partitions(
                            t.partitions
                                .into_iter()
                                .map(|p| {
                                    fetch_response::PartitionData::default()
                                        .with_partition_index(p.partition)
                                        .with_error_code(topic_denied)
                                        .with_high_watermark(-1)
                                        .with_last_stable_offset(-1)
                                        .with_log_start_offset(-1)
                                        .with_records(Some(bytes::Bytes::new()))
                                })
                                .collect(),
                        )
                })
                .collect();
            // A request naming no partition has nothing to refuse one by one.
            let code = if topics.iter().all(|t| t.partitions.is_empty()) {
                topic_denied
            } else {
                0
            };
            ResponseKind::Fetch(
                FetchResponse::default()
                    .with_error_code(code)
                    .with_responses(topics),
            )
        }
        (ApiKey::ListOffsets, Some(RequestKind::ListOffsets(r))) => ResponseKind::ListOffsets(
            ListOffsetsResponse::default().with_topics(
                r.topics
                    .into_iter()
                    .map(|t| {
                        list_offsets_response::ListOffsetsTopicResponse::default()
                            .with_name(t.name)
                            .with_partitions(
                                t.partitions
                                    .into_iter()
                                    .map(|p| {
                                        list_offsets_response::ListOffsetsPartitionResponse::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(topic_denied)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        (ApiKey::OffsetCommit, Some(RequestKind::OffsetCommit(r))) => ResponseKind::OffsetCommit(
            OffsetCommitResponse::default().with_topics(
                r.topics
                    .into_iter()
                    .map(|t| {
                        offset_commit_response::OffsetCommitResponseTopic::default()
                            .with_name(t.name)
                            .with_partitions(
                                t.partitions
                                    .into_iter()
                                    .map(|p| {
                                        offset_commit_response::OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(group_denied)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        (ApiKey::OffsetFetch, _) => {
            ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_error_code(group_denied))
        }
        (ApiKey::FindCoordinator, Some(RequestKind::FindCoordinator(r))) => {
            // key_type 1 asks for a transaction coordinator.
            let code = if r.key_type == 1 { txn_denied } else { group_denied };
            ResponseKind::FindCoordinator(
                FindCoordinatorResponse::default()
                    .with_error_code(code)
                    .with_error_message(message(CONSUME))
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
            )
        }
        (ApiKey::JoinGroup, _) => ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(group_denied)
                .with_generation_id(-1),
        ),
        (ApiKey::Heartbeat, _) => {
            ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(group_denied))
        }
        (ApiKey::LeaveGroup, _) => {
            ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(group_denied))
        }
        (ApiKey::SyncGroup, _) => {
            ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(group_denied))
        }
        (ApiKey::ListGroups, _) => {
            ResponseKind::ListGroups(ListGroupsResponse::default().with_error_code(group_denied))
        }
        (ApiKey::DescribeGroups, Some(RequestKind::DescribeGroups(r))) => ResponseKind::DescribeGroups(
            DescribeGroupsResponse::default().with_groups(
                r.groups
                    .into_iter()
                    .map(|g| {
                        describe_groups_response::DescribedGroup::default()
                            .with_group_id(g)
                            .with_error_code(group_denied)
                    })
                    .collect(),
            ),
        ),
        (ApiKey::DeleteGroups, Some(RequestKind::DeleteGroups(r))) => ResponseKind::DeleteGroups(
            DeleteGroupsResponse::default().with_results(
                r.groups_names
                    .into_iter()
                    .map(|g| {
                        delete_groups_response::DeletableGroupResult::default()
                            .with_group_id(g)
                            .with_error_code(group_denied)
                    })
                    .collect(),
            ),
        ),
        (ApiKey::CreateTopics, Some(RequestKind::CreateTopics(r))) => ResponseKind::CreateTopics(
            CreateTopicsResponse::default().with_topics(
                r.topics
                    .into_iter()
                    .map(|t| {
                        create_topics_response::CreatableTopicResult::default()
                            .with_name(t.name)
                            .with_error_code(cluster_denied)
                            .with_error_message(message(ADMIN))
                    })
                    .collect(),
            ),
        ),
        (ApiKey::DeleteTopics, Some(RequestKind::DeleteTopics(r))) => {
            let names: Vec<_> = r
                .topic_names
                .into_iter()
                .map(Some)
                .chain(r.topics.into_iter().map(|t| t.name))
                .collect();
            ResponseKind::DeleteTopics(
                DeleteTopicsResponse::default().with_responses(
                    names
                        .into_iter()
                        .map(|name| {
                            delete_topics_response::DeletableTopicResult::default()
                                .with_name(name)
                                .with_error_code(cluster_denied)
                        })
                        .collect(),
                ),
            )
        }
        (ApiKey::CreatePartitions, Some(RequestKind::CreatePartitions(r))) => {
            ResponseKind::CreatePartitions(
                CreatePartitionsResponse::default().with_results(
                    r.topics
                        .into_iter()
                        .map(|t| {
                            create_partitions_response::CreatePartitionsTopicResult::default()
                                .with_name(t.name)
                                .with_error_code(cluster_denied)
                                .with_error_message(message(ADMIN))
                        })
                        .collect(),
                ),
            )
        }
        (ApiKey::AddPartitionsToTxn, Some(RequestKind::AddPartitionsToTxn(r))) => {
            ResponseKind::AddPartitionsToTxn(
                AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
                    r.v3_and_below_topics
                        .into_iter()
                        .map(|t| {
                            add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                                .with_name(t.name)
                                .with_results_by_partition(
                                    t.partitions
                                        .into_iter()
                                        .map(|p| {
                                            add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                                .with_partition_index(p)
                                                .with_partition_error_code(txn_denied)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            )
        }
        (ApiKey::AddOffsetsToTxn, _) => ResponseKind::AddOffsetsToTxn(
            AddOffsetsToTxnResponse::default().with_error_code(txn_denied),
        ),
        (ApiKey::EndTxn, _) => ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(txn_denied)),
        (ApiKey::TxnOffsetCommit, Some(RequestKind::TxnOffsetCommit(r))) => ResponseKind::TxnOffsetCommit(
            TxnOffsetCommitResponse::default().with_topics(
                r.topics
                    .into_iter()
                    .map(|t| {
                        txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                            .with_name(t.name)
                            .with_partitions(
                                t.partitions
                                    .into_iter()
                                    .map(|p| {
                                        txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(txn_denied)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> Broker {
        Broker {
            node_id: 1,
            host: "gw.example".into(),
            port: 9094,
            partitions: 8,
        }
    }

    fn topic(name: &str) -> metadata_request::MetadataRequestTopic {
        metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_owned()))))
    }

    #[test]
    fn metadata_names_this_gateway_and_refuses_invalid_topics() {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![topic("purchases"), topic("_internal")]));
        let response = metadata(&broker(), &request, 12);
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.brokers[0].host.as_str(), "gw.example");
        assert_eq!(response.controller_id, BrokerId(1));
        assert_eq!(response.topics[0].error_code, 0);
        assert_eq!(response.topics[0].partitions.len(), 8);
        assert!(
            response.topics[0]
                .partitions
                .iter()
                .all(|p| p.leader_id == BrokerId(1))
        );
        assert_eq!(response.topics[1].error_code, 17);
        assert!(response.topics[1].partitions.is_empty());
        // All topics: none listed.
        assert!(
            metadata(&broker(), &MetadataRequest::default(), 12)
                .topics
                .is_empty()
        );
    }

    #[test]
    fn init_producer_id_hands_out_ids_bumps_epochs_and_refuses_transactions() {
        let fresh =
            init_producer_id(&InitProducerIdRequest::default().with_producer_id(ProducerId(-1)));
        assert_eq!(fresh.error_code, 0);
        assert!(fresh.producer_id.0 >= 0);
        assert_eq!(fresh.producer_epoch, 0);
        let bumped = init_producer_id(
            &InitProducerIdRequest::default()
                .with_producer_id(ProducerId(42))
                .with_producer_epoch(3),
        );
        assert_eq!((bumped.producer_id.0, bumped.producer_epoch), (42, 4));
        let txn = init_producer_id(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("t")))),
        );
        assert_eq!(txn.error_code, 53);
    }

    #[test]
    fn fetch_is_refused_for_each_requested_partition() {
        let request = FetchRequest::default().with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("purchases")))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default().with_partition(0),
                    fetch_request::FetchPartition::default().with_partition(5),
                ]),
        ]);
        let Some(ResponseKind::Fetch(response)) =
            refusal(ApiKey::Fetch, Some(RequestKind::Fetch(request)))
        else {
            panic!("a Fetch answer");
        };
        assert_eq!(response.error_code, 0);
        assert_eq!(response.responses.len(), 1);
        assert_eq!(response.responses[0].topic.0.as_str(), "purchases");
        let partitions = &response.responses[0].partitions;
        assert_eq!(
            partitions
                .iter()
                .map(|p| (p.partition_index, p.error_code))
                .collect::<Vec<_>>(),
            vec![(0, 29), (5, 29)]
        );
        let Some(ResponseKind::Fetch(empty)) = refusal(
            ApiKey::Fetch,
            Some(RequestKind::Fetch(FetchRequest::default())),
        ) else {
            panic!("a Fetch answer");
        };
        assert_eq!(empty.error_code, 29);
    }

    #[test]
    fn every_advertised_refused_api_has_a_refusal() {
        use crate::api::{BodyPolicy, body_policy};
        for &(api, _, max) in ADVERTISED {
            if matches!(
                api,
                ApiKey::Produce
                    | ApiKey::Metadata
                    | ApiKey::ApiVersions
                    | ApiKey::SaslHandshake
                    | ApiKey::SaslAuthenticate
                    | ApiKey::InitProducerId
            ) {
                continue;
            }
            let request = match body_policy(api, max) {
                BodyPolicy::HeaderOnly => None,
                BodyPolicy::Decode(_) => Some(default_request(api)),
            };
            assert!(refusal(api, request).is_some(), "{api:?} has no refusal");
        }
    }

    fn default_request(api: ApiKey) -> RequestKind {
        match api {
            ApiKey::Fetch => RequestKind::Fetch(Default::default()),
            ApiKey::ListOffsets => RequestKind::ListOffsets(Default::default()),
            ApiKey::OffsetCommit => RequestKind::OffsetCommit(Default::default()),
            ApiKey::FindCoordinator => RequestKind::FindCoordinator(Default::default()),
            ApiKey::DescribeGroups => RequestKind::DescribeGroups(Default::default()),
            ApiKey::DeleteGroups => RequestKind::DeleteGroups(Default::default()),
            ApiKey::CreateTopics => RequestKind::CreateTopics(Default::default()),
            ApiKey::DeleteTopics => RequestKind::DeleteTopics(Default::default()),
            ApiKey::CreatePartitions => RequestKind::CreatePartitions(Default::default()),
            ApiKey::AddPartitionsToTxn => RequestKind::AddPartitionsToTxn(Default::default()),
            ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(Default::default()),
            ApiKey::EndTxn => RequestKind::EndTxn(Default::default()),
            ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(Default::default()),
            other => panic!("no default request for {other:?}"),
        }
    }
}
