//! The query function (product.md §9): Keen's analyses, the collections and a project's dead
//! letters, over HTTP.
//!
//! [`QueryService::respond`] takes the parts of an HTTP request that matter (method, path, query
//! string, `Authorization` header, body) and answers a status and a JSON body; `main` adapts it to the
//! Lambda HTTP event (function URL / HTTP API payload 2.0) or serves it on a local port. Reading
//! follows architecture.md: a count without filters sums the hourly counters (plus the partial
//! hours at the window's edges), anything else reads every (day, shard) partition of the window
//! that holds data, in parallel; `latest` walks the days backwards from the newest; a query
//! that would read more than the configured bounds is refused with 400 before it starts.

pub mod analysis;
mod auth;
mod engine;

pub use auth::{Access, KeyDirectory};
pub use engine::Bounds;

use crate::analysis::QueryError;
use keen_aws::collections::read_collections;
use keen_aws::dead_letters::{DeadLetterQuery, list_dead_letters};
use keen_shared::key::KeyModel;
use serde_json::{Value, json};

/// Table names and limits, from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Events.
    pub events_table: String,
    /// Hourly counters.
    pub counters_table: String,
    /// Collections.
    pub collections_table: String,
    /// DeadLetters.
    pub dead_letters_table: String,
    /// Keys.
    pub keys_table: String,
    /// Shards per (project, collection, day): must equal the ingest function's.
    pub shards: u16,
    /// What one query may read.
    pub bounds: Bounds,
}

pub use keen_config::{ConfigError, Env};

impl Config {
    /// Reads the process environment ([`Config::read`]).
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::read(&Env::process())
    }

    /// Reads `EVENTS_TABLE`, `COUNTERS_TABLE`, `COLLECTIONS_TABLE`, `DEAD_LETTERS_TABLE`,
    /// `KEYS_TABLE`, `EVENT_SHARDS` (default 16), `QUERY_MAX_PARTITIONS` and `QUERY_MAX_EVENTS`
    /// from `env`; a malformed value is an error, never a default.
    pub fn read(env: &Env<'_>) -> Result<Config, ConfigError> {
        let defaults = Bounds::default();
        Ok(Config {
            events_table: env.required("EVENTS_TABLE", "the Events table's name")?,
            counters_table: env.required("COUNTERS_TABLE", "the Counters table's name")?,
            collections_table: env.required("COLLECTIONS_TABLE", "the Collections table's name")?,
            dead_letters_table: env
                .required("DEAD_LETTERS_TABLE", "the DeadLetters table's name")?,
            keys_table: env.required("KEYS_TABLE", "the Keys table's name")?,
            shards: keen_aws::items::shards(env)?,
            bounds: Bounds {
                partitions: env.number("QUERY_MAX_PARTITIONS", defaults.partitions)?,
                events: env.number("QUERY_MAX_EVENTS", defaults.events)?,
            },
        })
    }
}

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply { status: 200, body }
    }

    fn error(error: &QueryError) -> Reply {
        Reply {
            status: error.status(),
            body: error.to_json(),
        }
    }

    /// A storage failure: the caller may retry; the message says so without internals.
    fn unavailable(error: &keen_aws::items::StoreError) -> Reply {
        tracing::error!(%error, "storage read failed");
        Reply {
            status: 503,
            body: json!({
                "message": "The event store could not be read just now; retry the query.",
                "error_code": "ServiceUnavailableError",
            }),
        }
    }
}

/// The function's state, built once per execution environment.
pub struct QueryService {
    config: Config,
    dynamodb: aws_sdk_dynamodb::Client,
    /// Deletions' writes.
    batcher: keen_aws::batch::WriteBatcher,
    keys: KeyDirectory,
    clock: fn() -> i64,
}

/// Milliseconds since the epoch, from the system clock.
pub fn system_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Headers on every answer, so that a page on another origin can query with a read key (Keen's
/// browser SDK sends `Authorization`, `Content-Type` and `Keen-Sdk`, which need a preflight).
pub const CORS_HEADERS: [(&str, &str); 4] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "GET, POST, DELETE, OPTIONS"),
    (
        "access-control-allow-headers",
        "Authorization, Content-Type, Keen-Sdk",
    ),
    ("access-control-max-age", "86400"),
];

/// The largest request body read: a query's parameters, never events.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The routes, by path shape.
enum Route<'a> {
    Query(&'a str, &'a str),
    Collections(&'a str),
    Collection(&'a str, &'a str),
    DeadLetters(&'a str),
}

impl<'a> Route<'a> {
    const fn project(&self) -> &'a str {
        match self {
            Route::Query(project, _)
            | Route::Collections(project)
            | Route::Collection(project, _)
            | Route::DeadLetters(project) => project,
        }
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match segments.as_slice() {
        ["", "3.0", "projects", project, "queries", analysis] => {
            Some(Route::Query(project, analysis))
        }
        ["", "3.0", "projects", project, "events"] => Some(Route::Collections(project)),
        ["", "3.0", "projects", project, "events", collection] => {
            Some(Route::Collection(project, collection))
        }
        ["", "3.0", "projects", project, "dead_letters"] => Some(Route::DeadLetters(project)),
        _ => None,
    }
}

/// The parameters of a `POST`: the body's members (strings as they are, other values as JSON
/// text, `null` dropped), so that both transports meet the same parsers.
pub fn parse_json_body(body: &[u8]) -> Result<Vec<(String, String)>, QueryError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(QueryError::InvalidParameter(format!(
            "the request body holds more than the {MAX_BODY_BYTES} bytes a query may"
        )));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(members)) => Ok(members
            .into_iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(name, value)| match value {
                Value::String(text) => (name, text),
                other => (name, other.to_string()),
            })
            .collect()),
        Ok(_) => Err(QueryError::InvalidParameter(
            "the request body is not a JSON object of query parameters".into(),
        )),
        Err(e) => Err(QueryError::InvalidParameter(format!(
            "the request body is not valid JSON ({e}); send the query's parameters as a JSON \
             object with Content-Type: application/json"
        ))),
    }
}

/// The query string's parameters, percent-decoded, in order.
pub fn parse_query_string(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

impl QueryService {
    /// The service over `dynamodb`, checking keys under `pepper`.
    pub fn new(
        config: Config,
        dynamodb: aws_sdk_dynamodb::Client,
        pepper: keen_aws::secrets::Pepper,
    ) -> Self {
        let keys = KeyDirectory::new(
            keen_aws::keys_table::KeysTable::new(dynamodb.clone(), config.keys_table.clone()),
            pepper,
        );
        QueryService {
            config,
            batcher: keen_aws::batch::WriteBatcher::new(dynamodb.clone()),
            dynamodb,
            keys,
            clock: system_clock_ms,
        }
    }

    /// Replaces the clock (tests of relative timeframes).
    pub fn with_clock(mut self, clock: fn() -> i64) -> Self {
        self.clock = clock;
        self
    }

    /// Answers one request.
    pub async fn respond(
        &self,
        method: &str,
        path: &str,
        query: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Reply {
        if method == "OPTIONS" {
            // A CORS preflight: the headers are the answer; no key is sent with it.
            return Reply {
                status: 204,
                body: Value::Null,
            };
        }
        let Some(route) = route(path) else {
            return Reply::error(&QueryError::ResourceNotFound(format!(
                "Nothing is served at {path}: the API has /3.0/projects/{{project_id}}/queries/\
                 {{analysis}}, /events, /events/{{collection}} and /dead_letters."
            )));
        };
        let allowed: &[&str] = match route {
            Route::Query(..) => &["GET", "POST"],
            Route::Collection(..) => &["GET", "DELETE"],
            Route::Collections(_) | Route::DeadLetters(_) => &["GET"],
        };
        if !allowed.contains(&method) {
            return Reply {
                status: 405,
                body: json!({
                    "message": format!("{method} is not supported here; use {}.", allowed.join(" or ")),
                    "error_code": "MethodNotAllowedError",
                }),
            };
        }
        let mut params = parse_query_string(query);
        if method == "POST" {
            match parse_json_body(body) {
                Ok(members) => params.extend(members),
                Err(error) => return Reply::error(&error),
            }
        }
        let api_key = params
            .iter()
            .find(|(k, _)| k == "api_key")
            .map(|(_, v)| v.as_str())
            .or(authorization);
        let needed = match route {
            Route::DeadLetters(_) => Access::Master,
            Route::Collection(..) if method == "DELETE" => Access::Master,
            _ => Access::Queries,
        };
        let key = match self.keys.authorize(route.project(), api_key, needed).await {
            Ok(key) => key,
            Err(auth::AuthError::Denied(error)) => return Reply::error(&error),
            Err(auth::AuthError::Store(error)) => return Reply::unavailable(&error),
        };
        let now = (self.clock)();
        let result = match route {
            Route::Query(project, analysis) => match analysis::QueryKind::parse(analysis) {
                None => Err(engine::Failure::Query(QueryError::ResourceNotFound(
                    format!(
                        "{analysis} is not an analysis; the analyses are {}.",
                        analysis::QueryKind::names()
                    ),
                ))),
                Some(analysis::QueryKind::Extraction) => {
                    engine::extraction(self.engine(), project, &params, &key, now).await
                }
                Some(analysis::QueryKind::Funnel) => {
                    engine::funnel(self.engine(), project, &params, &key, now).await
                }
                Some(kind) => {
                    engine::analyze(self.engine(), project, kind, &params, &key, now).await
                }
            },
            Route::Collections(project) => self.collections(project, None, &key).await,
            Route::Collection(project, collection) if method == "DELETE" => {
                match engine::delete(
                    self.engine(),
                    &self.batcher,
                    &self.config.collections_table,
                    project,
                    collection,
                    &params,
                    now,
                )
                .await
                {
                    // Keen answers a deletion 204, without a body.
                    Ok(_) => {
                        return Reply {
                            status: 204,
                            body: Value::Null,
                        };
                    }
                    Err(failure) => Err(failure),
                }
            }
            Route::Collection(project, collection) => {
                self.collections(project, Some(collection), &key).await
            }
            Route::DeadLetters(project) => self.dead_letters(project, &params).await,
        };
        match result {
            Ok(body) => Reply::ok(body),
            Err(engine::Failure::Query(error)) => Reply::error(&error),
            Err(engine::Failure::Store(error)) => Reply::unavailable(&error),
        }
    }

    fn engine(&self) -> engine::Engine<'_> {
        engine::Engine {
            dynamodb: &self.dynamodb,
            events_table: &self.config.events_table,
            counters_table: &self.config.counters_table,
            shards: self.config.shards,
            bounds: self.config.bounds,
        }
    }

    /// `GET /events`: every collection with its event count, first and last event times and
    /// property types, as Keen lists them (a bare array of objects with `name`, `properties` and
    /// `url`); `GET /events/{collection}` (`only`): that one, as an object (404 when it holds no
    /// event).
    /// A key restricted by `queries.filters` sees what its filters let through: each collection
    /// described from its matching events ([`engine::describe_matching`]), and none that holds
    /// no matching event.
    async fn collections(
        &self,
        project: &str,
        only: Option<&str>,
        key: &KeyModel,
    ) -> Result<Value, engine::Failure> {
        let collections =
            read_collections(&self.dynamodb, &self.config.collections_table, project).await?;
        let key_filters = analysis::key_filters(key.options.queries.as_ref())?;
        let mut out = Vec::with_capacity(collections.len());
        for collection in collections {
            if only.is_some_and(|name| name != collection.name) {
                continue;
            }
            let mut described = if key_filters.is_empty() {
                let count = engine::total_count(self.engine(), project, &collection.name).await?;
                // Every event deleted: the collection is gone, as Keen's is.
                if count == 0 {
                    continue;
                }
                json!({
                    "name": collection.name,
                    "count": count,
                    "first_event_at": collection.first_event_at,
                    "last_event_at": collection.last_event_at,
                    "properties": collection.properties,
                    "properties_truncated": collection.properties_truncated,
                })
            } else {
                match engine::describe_matching(
                    self.engine(),
                    project,
                    &collection.name,
                    &key_filters,
                )
                .await?
                {
                    Some(described) => described,
                    None => continue,
                }
            };
            // Keen's listing entry names where the collection lives.
            described["url"] = json!(format!(
                "/3.0/projects/{project}/events/{}",
                collection.name
            ));
            out.push(described);
        }
        match only {
            // Keen's listing is a bare array, not wrapped in `result`: its SDKs hand it to the
            // caller as it is.
            None => Ok(Value::Array(out)),
            Some(name) => out.pop().ok_or_else(|| {
                engine::Failure::Query(QueryError::ResourceNotFound(format!(
                    "The collection {name:?} holds no event in this project."
                )))
            }),
        }
    }

    /// `GET /dead_letters`: the project's dead letters, newest first (master key only).
    async fn dead_letters(
        &self,
        project: &str,
        params: &[(String, String)],
    ) -> Result<Value, engine::Failure> {
        let request = engine::DeadLetterParams::parse(params, (self.clock)())?;
        let query = DeadLetterQuery {
            project_id: project.to_owned(),
            collection: request.collection,
            code: None,
            from_ms: request.from_ms,
            to_ms: request.to_ms,
            limit: request.limit,
        };
        let letters =
            list_dead_letters(&self.dynamodb, &self.config.dead_letters_table, &query).await?;
        Ok(json!({ "result": letters }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_body_meets_the_query_string_parsers() {
        let body = br#"{"analysis_type": "count", "event_collection": "purchases",
            "timezone": 7200, "timeframe": {"start": "2024-03-01T00:00:00Z"},
            "filters": [], "group_by": ["a", "b"], "interval": null, "latest": 5}"#;
        let mut params = parse_json_body(body).expect("a JSON object");
        params.sort();
        assert_eq!(
            params,
            vec![
                ("analysis_type".to_owned(), "count".to_owned()),
                ("event_collection".to_owned(), "purchases".to_owned()),
                ("filters".to_owned(), "[]".to_owned()),
                ("group_by".to_owned(), r#"["a","b"]"#.to_owned()),
                ("latest".to_owned(), "5".to_owned()),
                (
                    "timeframe".to_owned(),
                    r#"{"start":"2024-03-01T00:00:00Z"}"#.to_owned()
                ),
                ("timezone".to_owned(), "7200".to_owned()),
            ]
        );
        assert_eq!(parse_json_body(b"  \n"), Ok(vec![]));
    }

    #[test]
    fn a_bad_body_is_named() {
        for (body, text) in [
            (&b"[1]"[..], "not a JSON object"),
            (b"{\"a\": ", "not valid JSON"),
            (b"event_collection=x", "not valid JSON"),
        ] {
            let error = parse_json_body(body).expect_err("refused");
            assert_eq!(error.error_code(), "InvalidParameterError");
            assert!(error.message().contains(text), "{error}");
        }
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        let error = parse_json_body(&huge).expect_err("too large");
        assert!(error.message().contains("more than the"), "{error}");
    }

    #[test]
    fn routes_by_path_shape() {
        assert!(matches!(
            route("/3.0/projects/p/queries/median/"),
            Some(Route::Query("p", "median"))
        ));
        assert!(matches!(
            route("/3.0/projects/p/events/purchases"),
            Some(Route::Collection("p", "purchases"))
        ));
        assert!(matches!(
            route("/3.0/projects/p/events"),
            Some(Route::Collections("p"))
        ));
        assert!(route("/3.0/projects/p/events/a/b").is_none());
        assert!(route("/2.0/projects/p/events").is_none());
    }
}
