//! The query Lambda, or — outside Lambda — the same service on a local port.
//!
//! Inside Lambda (`AWS_LAMBDA_RUNTIME_API` is set) it answers API Gateway events: the deployed
//! REST API's, or HTTP API / function URL ones. Elsewhere it listens on `QUERY_LISTEN` (default
//! `127.0.0.1:3000`), which is how the local stack serves it; both paths go through
//! [`QueryService::respond`].

use keen_aws::secrets::load_pepper;
use keen_query::{CORS_HEADERS, Config, QueryService, Reply};
use std::sync::Arc;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .init();

    let config = Config::from_env()?;
    let sdk = aws_config::load_from_env().await;
    let pepper = load_pepper(&sdk).await?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    // Open the connection now: the first TLS handshake would otherwise land on the first query.
    let _ = dynamodb
        .describe_table()
        .table_name(&config.events_table)
        .send()
        .await;
    let service = Arc::new(QueryService::new(config, dynamodb, pepper));

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        lambda(service).await
    } else {
        let listen = keen_config::Env::process().get_or("QUERY_LISTEN", "127.0.0.1:3000");
        local::serve(service, &listen).await
    }
}

/// The status and body text: none for 204 (a preflight's answer).
fn to_json_response(reply: Reply) -> (u16, String) {
    let body = if reply.status == 204 {
        String::new()
    } else {
        reply.body.to_string()
    };
    (reply.status, body)
}

/// A response builder with the status, JSON content type and CORS headers set.
fn builder(status: u16) -> hyper::http::response::Builder {
    CORS_HEADERS.iter().fold(
        hyper::http::Response::builder()
            .status(status)
            .header("content-type", "application/json"),
        |builder, (name, value)| builder.header(*name, *value),
    )
}

async fn lambda(service: Arc<QueryService>) -> Result<(), Error> {
    use lambda_http::{Body, Request, run, service_fn};
    run(service_fn(move |request: Request| {
        let service = Arc::clone(&service);
        async move {
            let authorization = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            let reply = service
                .respond(
                    request.method().as_str(),
                    request.uri().path(),
                    request.uri().query().unwrap_or(""),
                    authorization,
                    request.body().as_ref(),
                )
                .await;
            let (status, body) = to_json_response(reply);
            builder(status).body(Body::Text(body)).map_err(Error::from)
        }
    }))
    .await
}

mod local {
    //! A plain HTTP/1.1 server for the local stack.

    use super::{Error, builder, to_json_response};
    use http_body_util::{BodyExt, Full, Limited};
    use hyper::Request;
    use hyper::body::{Bytes, Incoming};
    use hyper_util::rt::TokioIo;
    use keen_query::QueryService;
    use std::sync::Arc;

    pub async fn serve(service: Arc<QueryService>, listen: &str) -> Result<(), Error> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen} (QUERY_LISTEN): {e}"))?;
        let address = listener.local_addr()?;
        println!("keen-query listening on http://{address}");
        tracing::info!(%address, "query API listening");
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                () = &mut shutdown => return Ok(()),
            };
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let service = Arc::clone(&service);
                    async move {
                        let (parts, body) = request.into_parts();
                        let authorization = parts
                            .headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok());
                        // One byte past the bound, so that an oversized body is refused by
                        // name rather than cut.
                        let body = match Limited::new(body, keen_query::MAX_BODY_BYTES + 1)
                            .collect()
                            .await
                        {
                            Ok(collected) => collected.to_bytes(),
                            Err(_) => Bytes::from(vec![b' '; keen_query::MAX_BODY_BYTES + 1]),
                        };
                        let reply = service
                            .respond(
                                parts.method.as_str(),
                                parts.uri.path(),
                                parts.uri.query().unwrap_or(""),
                                authorization,
                                &body,
                            )
                            .await;
                        let (status, body) = to_json_response(reply);
                        builder(status).body(Full::new(Bytes::from(body)))
                    }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), handler);
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            });
        }
    }

    /// Ctrl-C or SIGTERM.
    async fn shutdown_signal() {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
}
