//! The domain of the Kafka Inbound Cluster: everything that happens to one record between the
//! backing log and storage, with no knowledge of Lambda, DynamoDB or SQS.
//!
//! The contract is `product.md` §2–§8; [`pipeline::process`] is the one entry point: a decoded
//! record in, exactly one [`pipeline::Outcome`] out (a stored event or a dead letter reason).

pub mod addon;
pub mod autofill;
pub mod collection;
pub mod dead_letter;
pub mod event;
pub mod keen;
pub mod key;
pub mod pipeline;
pub mod placeholder;
pub mod record;
pub mod reject;
pub mod scram;
pub mod storage;
pub mod timestamp;

pub use pipeline::{Outcome, StoredEvent, process};
pub use reject::{ErrorCode, Rejection};
