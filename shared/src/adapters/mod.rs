//! The DynamoDB and SQS adapters (feature `aws`). The domain modules never import these: they
//! turn domain values into items and messages and back, and talk to the services.

pub mod batch;
pub mod dead_letters;
pub mod dlq;
pub mod keys_table;
pub mod provision;
pub mod reads;
pub mod secrets;
pub mod store;
