//! The topic-setup Lambda: answers the `InboundTopic` custom resource (see the library docs).

use keen_topic_setup::{CustomResourceRequest, handle, https, respond, response};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time kept back to answer CloudFormation before Lambda stops the function.
const ANSWER_RESERVE: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .without_time()
        .init();
    let tls = https::connector()?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let tls = tls.clone();
        async move {
            let request: CustomResourceRequest = serde_json::from_value(event.payload)?;
            tracing::info!(
                request_type = %request.request_type,
                logical_resource_id = %request.logical_resource_id,
                "custom resource request"
            );
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            let budget = Duration::from_millis(event.context.deadline.saturating_sub(now_ms))
                .saturating_sub(ANSWER_RESERVE);
            // Spawned, so that a panic becomes a FAILED answer instead of silence.
            let work = {
                let request = request.clone();
                let tls = tls.clone();
                tokio::spawn(async move { handle(&request, &tls).await.map_err(|e| e.to_string()) })
            };
            let result = match tokio::time::timeout(budget, work).await {
                Ok(Ok(result)) => result,
                Ok(Err(join)) => Err(format!("topic-setup failed unexpectedly: {join}")),
                Err(_) => Err(format!(
                    "topic-setup did not finish within {} s: are the brokers reachable from the \
                     function's subnets and security group (port 9098)?",
                    budget.as_secs()
                )),
            };
            if let Err(reason) = &result {
                tracing::error!(%reason, "custom resource failed");
            }
            respond(&tls, &request.response_url, &response(&request, result)).await?;
            Ok::<(), lambda_runtime::Error>(())
        }
    }))
    .await
}
