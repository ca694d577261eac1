//! The authorizer Lambda: configuration from the environment, connections opened during init,
//! then one [`keen_authorizer::Authorizer::handle`] per invocation.
//!
//! Environment: `KEYS_TABLE`, `KEY_PEPPER` (the pepper or a Secrets Manager ARN), and the
//! standard AWS variables (`AWS_ENDPOINT_URL` points it at a local server).

use keen_authorizer::Authorizer;
use keen_aws::keys_table::KeysTable;
use keen_aws::secrets::load_pepper;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_current_span(false)
        .with_target(false)
        .init();

    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let table_name = keen_config::Env::process().required("KEYS_TABLE", "the Keys table's name")?;
    let pepper = load_pepper(&config).await?;
    let keys = KeysTable::new(aws_sdk_dynamodb::Client::new(&config), table_name);
    // The first call pays the TLS handshake: pay it here, not in the first invocation, and fail
    // init loudly if the table is missing.
    keys.warm_up().await?;
    tracing::info!(table = keys.table_name(), "authorizer ready");

    let authorizer = Authorizer::new(keys, pepper);
    let authorizer = &authorizer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        authorizer.handle(event.payload).await
    }))
    .await
}
