//! Which Kafka APIs the gateway speaks, at which versions, and the shape each decoded request
//! body is checked against before `kafka-protocol` decodes it (see [`crate::wire`]).
//!
//! Three groups:
//! - served: ApiVersions, SaslHandshake, SaslAuthenticate, Metadata, Produce, InitProducerId;
//! - advertised only to be refused with the codes of product.md §1, because clients check the
//!   advertised versions first and would otherwise fail locally with "not supported by broker"
//!   (librdkafka also infers features from them: message format v2 needs Fetch ≥ 4, LZ4 needs
//!   FindCoordinator, SASL needs SaslHandshake v0 in the range);
//! - everything else is not advertised, and a request for it closes the connection, as Kafka
//!   does for an API it does not know.

use crate::wire::{Field, Shape};
use kafka_protocol::messages::ApiKey;

/// The advertised API versions, `(api, min, max)`.
pub const ADVERTISED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    // v0 is answered too: librdkafka 2.0.2 requires it in the range to enable SASL at all.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
];

/// The advertised version range of `api`, if any.
pub fn advertised(api: ApiKey) -> Option<(i16, i16)> {
    ADVERTISED
        .iter()
        .find(|(key, _, _)| *key == api)
        .map(|&(_, min, max)| (min, max))
}

/// APIs a client may call before it has authenticated.
pub fn allowed_before_authentication(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

/// How the gateway reads a request body.
#[derive(Debug, Clone)]
pub enum BodyPolicy {
    /// Decode it after checking it against this shape.
    Decode(Shape),
    /// Answer from the header alone: the refusal needs nothing from the body, and not decoding
    /// it means its arrays cannot hurt.
    HeaderOnly,
}

/// The policy for an advertised `api` at `version` (callers check the version range first).
pub fn body_policy(api: ApiKey, version: i16) -> BodyPolicy {
    use Field::*;
    let structs = Structs;
    let prims = |f: Field| Primitives(Box::new(f));
    let decode = |flexible_from: i16, fields: Vec<Field>| {
        BodyPolicy::Decode(Shape {
            flexible: version >= flexible_from,
            fields,
        })
    };
    let since = |v: i16, field: Field| if version >= v { vec![field] } else { vec![] };
    match api {
        // No arrays in these bodies at the advertised versions: nothing to check.
        ApiKey::ApiVersions
        | ApiKey::SaslHandshake
        | ApiKey::SaslAuthenticate
        | ApiKey::InitProducerId
        | ApiKey::FindCoordinator
        | ApiKey::AddOffsetsToTxn
        | ApiKey::EndTxn => BodyPolicy::Decode(Shape {
            flexible: false,
            fields: vec![],
        }),
        ApiKey::Produce => decode(
            9,
            vec![Str, I16, I32, structs(vec![Str, structs(vec![I32, Bytes])])],
        ),
        ApiKey::Metadata => {
            let topic = if version >= 10 {
                vec![Uuid, Str]
            } else {
                vec![Str]
            };
            decode(9, vec![structs(topic)])
        }
        ApiKey::Fetch => {
            // Its topics and partitions are echoed in the refusal, where clients look for it.
            let mut fields = vec![I32, I32, I32, I32, I8];
            fields.extend(since(7, I32));
            fields.extend(since(7, I32));
            let mut partition = vec![I32];
            partition.extend(since(9, I32));
            partition.push(I64);
            partition.extend(since(12, I32));
            partition.extend(since(5, I64));
            partition.push(I32);
            fields.push(structs(vec![Str, structs(partition)]));
            fields.extend(since(7, structs(vec![Str, prims(I32)])));
            decode(12, fields)
        }
        ApiKey::ListOffsets => {
            let mut partition = vec![I32];
            partition.extend(since(4, I32));
            partition.push(I64);
            let mut fields = vec![I32];
            fields.extend(since(2, I8));
            fields.push(structs(vec![Str, structs(partition)]));
            decode(6, fields)
        }
        ApiKey::CreateTopics => decode(
            5,
            vec![structs(vec![
                Str,
                I32,
                I16,
                structs(vec![I32, prims(I32)]),
                structs(vec![Str, Str]),
            ])],
        ),
        ApiKey::DeleteTopics => {
            if version >= 6 {
                decode(4, vec![structs(vec![Str, Uuid])])
            } else {
                decode(4, vec![prims(Str)])
            }
        }
        ApiKey::CreatePartitions => {
            decode(2, vec![structs(vec![Str, I32, structs(vec![prims(I32)])])])
        }
        ApiKey::OffsetCommit => {
            let mut fields = vec![Str, I32, Str];
            fields.extend(since(7, Str));
            if (2..=4).contains(&version) {
                fields.push(I64);
            }
            let mut partition = vec![I32, I64];
            partition.extend(since(6, I32));
            partition.push(Str);
            fields.push(structs(vec![Str, structs(partition)]));
            decode(8, fields)
        }
        ApiKey::TxnOffsetCommit => {
            let mut fields = vec![Str, Str, I64, I16];
            if version >= 3 {
                fields.extend([I32, Str, Str]);
            }
            let mut partition = vec![I32, I64];
            partition.extend(since(2, I32));
            partition.push(Str);
            fields.push(structs(vec![Str, structs(partition)]));
            decode(3, fields)
        }
        ApiKey::AddPartitionsToTxn => {
            decode(3, vec![Str, I64, I16, structs(vec![Str, prims(I32)])])
        }
        ApiKey::DescribeGroups => decode(5, vec![prims(Str)]),
        ApiKey::DeleteGroups => decode(2, vec![prims(Str)]),
        _ => BodyPolicy::HeaderOnly,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn every_advertised_range_is_one_kafka_protocol_can_decode() {
        for &(api, min, max) in ADVERTISED {
            let valid = api.valid_versions();
            assert!(
                min <= max && valid.min <= min && max <= valid.max,
                "{api:?} {min}..={max} outside {valid:?}"
            );
        }
    }

    /// A real request encoded by `kafka-protocol` passes its own shape at every advertised
    /// version: the shapes agree with the schemas.
    #[test]
    fn shapes_accept_what_kafka_protocol_encodes() {
        let topic = |name: &str| TopicName(StrBytes::from_string(name.to_owned()));
        let check = |api: ApiKey, version: i16, body: Vec<u8>| match body_policy(api, version) {
            BodyPolicy::Decode(shape) => {
                crate::wire::check_shape(&body, &shape, crate::decode::DEFAULT_MAX_ELEMENTS)
                    .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
            }
            BodyPolicy::HeaderOnly => panic!("{api:?} is decoded"),
        };
        let encode = |message: &dyn Fn(&mut Vec<u8>) -> anyhow_free::Result| {
            let mut body = Vec::new();
            message(&mut body).expect("encodes");
            body
        };
        for version in 3..=12 {
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_topic_data(vec![
                    produce_request::TopicProduceData::default()
                        .with_name(topic("purchases"))
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_index(3)
                                .with_records(Some(bytes::Bytes::from_static(b"records"))),
                        ]),
                ]);
            check(
                ApiKey::Produce,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
        }
        for version in 0..=12 {
            let request = MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic("a"))),
            ]));
            check(
                ApiKey::Metadata,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
        }
        for version in 4..=12 {
            let mut request = FetchRequest::default().with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(topic("a"))
                    .with_partitions(vec![
                        fetch_request::FetchPartition::default().with_partition(3),
                        fetch_request::FetchPartition::default().with_partition(4),
                    ]),
            ]);
            if version >= 7 {
                request.forgotten_topics_data = vec![
                    fetch_request::ForgottenTopic::default()
                        .with_topic(topic("b"))
                        .with_partitions(vec![1, 2]),
                ];
            }
            if version >= 11 {
                request.rack_id = StrBytes::from_static_str("rack");
            }
            check(
                ApiKey::Fetch,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
        }
        for version in 1..=7 {
            let request = ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic("a"))
                    .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()]),
            ]);
            check(
                ApiKey::ListOffsets,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
        }
        for version in 2..=7 {
            let request = CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(topic("a"))
                    .with_configs(vec![
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(StrBytes::from_static_str("retention.ms")),
                    ]),
            ]);
            check(
                ApiKey::CreateTopics,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
        }
        for version in 1..=6 {
            let mut request = DeleteTopicsRequest::default();
            if version >= 6 {
                request.topics = vec![
                    delete_topics_request::DeleteTopicState::default().with_name(Some(topic("a"))),
                ];
            } else {
                request.topic_names = vec![topic("a"), topic("b")];
            }
            check(
                ApiKey::DeleteTopics,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
        }
        for version in 2..=8 {
            let request = OffsetCommitRequest::default().with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic("a"))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default(),
                    ]),
            ]);
            check(
                ApiKey::OffsetCommit,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
        }
        for version in 0..=3 {
            let request = TxnOffsetCommitRequest::default().with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(topic("a"))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default(),
                    ]),
            ]);
            check(
                ApiKey::TxnOffsetCommit,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
            let request = AddPartitionsToTxnRequest::default().with_v3_and_below_topics(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic("a"))
                    .with_partitions(vec![0, 1]),
            ]);
            check(
                ApiKey::AddPartitionsToTxn,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
            let request = CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic("a"))
                    .with_assignments(Some(vec![
                        create_partitions_request::CreatePartitionsAssignment::default()
                            .with_broker_ids(vec![BrokerId(1)]),
                    ])),
            ]);
            check(
                ApiKey::CreatePartitions,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
        }
        for version in 0..=5 {
            let request = DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(StrBytes::from_static_str("g"))]);
            check(
                ApiKey::DescribeGroups,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
        }
        for version in 0..=2 {
            let request = DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(StrBytes::from_static_str("g"))]);
            check(
                ApiKey::DeleteGroups,
                version,
                encode(&|b| request.encode(b, version).map_err(|e| e.to_string())),
            );
        }
    }

    /// `Result` without pulling `anyhow` into the gateway's own dependencies.
    mod anyhow_free {
        pub type Result = std::result::Result<(), String>;
    }
}
