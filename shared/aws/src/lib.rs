//! The adapters of the Kafka Inbound Cluster (architecture.md): the domain's values
//! ([`keen_shared`]) as DynamoDB items and SQS messages, and the calls that write and read them.
//! The domain never imports this crate; the functions, the gateway and the local stack do.

pub mod batch;
pub mod collections;
pub mod counters;
pub mod dead_letters;
pub mod dedupe;
pub mod deletion;
pub mod dlq;
pub mod events;
#[cfg(any(test, feature = "test-util"))]
pub mod faults;
pub mod items;
pub mod keys_reader;
pub mod keys_table;
#[cfg(feature = "provision")]
pub mod provision;
pub mod retry;
pub mod secrets;
