//! `keenctl`: the operator's tool for tables, projects and keys, against any endpoint (AWS, or
//! a local moto server). Key commands go through [`keen_authorizer::Authorizer`], the same code
//! the authorizer Lambda runs, so the CLI and the function cannot disagree.
//!
//! Dead-letter commands go through the ingest's code the same way ([`dead_letters`]).
//!
//! Output: `provision` prints `export NAME=value` lines for a shell to `eval`; the key commands
//! print the authorizer's JSON answer on one line; `dead-letters` prints a table, an envelope,
//! or a line per replayed dead letter. Exit status: 0 done, 1 refused (the answer says why; for a
//! replay: some record is still invalid), 2 usage error, 3 configuration or storage failure
//! (retry or fix the setup).

mod dead_letters;

use keen_authorizer::Authorizer;
use keen_aws::keys_table::KeysTable;
use keen_aws::provision::{DeploymentSpec, provision};
use keen_aws::secrets::{PEPPER_ENV, load_pepper_from_env};
use serde_json::{Value, json};
use std::io::BufRead;
use std::process::ExitCode;

const USAGE: &str = "\
usage: keenctl [--endpoint-url URL] [--dynamodb-endpoint-url URL] [--region REGION]
               [--keys-table NAME] [--pepper-env VAR] COMMAND

commands:
  provision [--prefix P]          create the tables and queue of template.yaml, named P<LogicalId>
                                  (default prefix keen-); prints `export NAME=value` lines
  put-project PROJECT             create the project's SCRAM salt (idempotent)
  create-key PROJECT --name N --kind master|write|read|access [--permitted a,b] [--options JSON]
                                  generate a key; the answer shows it once
  import-key PROJECT --name N --kind K [--permitted a,b] [--options JSON] --key KEY|-
                                  import an existing key (`--key -` reads it from stdin, so it
                                  stays out of shell history)
  revoke-key PROJECT KEY_ID       stop a key (takes effect within 60 s everywhere)
  unrevoke-key PROJECT KEY_ID     reinstate a revoked key
  delete-key PROJECT KEY_ID       delete a key for good
  list-keys PROJECT               the project's keys (models only, never secrets)

  dead-letters list --project P [--collection C] [--code CODE] [--since ISO] [--until ISO]
                    [--limit N]
                                  newest first (default 50): failed_at, collection, code, id,
                                  source topic/partition/offset, message; --since inclusive,
                                  --until exclusive (ISO-8601, e.g. 2024-03-09T16:00:00Z)
  dead-letters show --project P --collection C --id ID
                                  the whole envelope (product.md §8) as JSON, payload included
  dead-letters replay --project P [--collection C] [--code CODE] [--id ID]... [--since ISO]
                    [--until ISO] [--dry-run]
                                  run the selected dead letters through the ingest again after
                                  a fix, keeping each record's identity: prints per dead letter
                                  stored / duplicate / still invalid (CODE) / failed. A stored
                                  or duplicate record's dead letter is removed; one still
                                  invalid keeps exactly one, with the new error. Replaying
                                  twice stores and counts once. --dry-run writes nothing.

defaults: --endpoint-url from AWS_ENDPOINT_URL (every service), --dynamodb-endpoint-url from
AWS_ENDPOINT_URL_DYNAMODB (DynamoDB only, ahead of --endpoint-url: the local stack keeps its
tables in dynalite and its queue in moto), --keys-table from KEYS_TABLE, the pepper from
the variable KEY_PEPPER (its value, or the ARN of a Secrets Manager secret holding it).
dead-letters list/show read DEAD_LETTERS_TABLE (or --dead-letters-table); replay needs the
ingest's own environment: EVENTS_TABLE, COLLECTIONS_TABLE, DEDUPE_TABLE, DEAD_LETTERS_TABLE,
KEYS_TABLE (or --keys-table), DEAD_LETTER_QUEUE_URL, and GEOIP_DATABASE and EVENT_SHARDS as the
ingest has them (`eval \"$(keenctl provision)\"` sets the names; no pepper is needed).";

/// Command options that take no value.
const BOOLEAN_FLAGS: &[&str] = &["dry-run"];

/// Exit status of a usage error.
const EXIT_USAGE: u8 = 2;
/// Exit status of a configuration or storage failure.
const EXIT_FAILURE: u8 = 3;

/// Global options and one command, as typed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Invocation {
    endpoint_url: Option<String>,
    /// DynamoDB's own endpoint, ahead of `endpoint_url`.
    dynamodb_endpoint_url: Option<String>,
    region: Option<String>,
    keys_table: Option<String>,
    pepper_env: Option<String>,
    command: Option<String>,
    positional: Vec<String>,
    /// Command options in order, `--name value` as ("name", "value").
    options: Vec<(String, String)>,
}

impl Invocation {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut invocation = Invocation::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                invocation.command = Some("help".to_owned());
                continue;
            }
            if let Some(flag) = arg.strip_prefix("--")
                && BOOLEAN_FLAGS.contains(&flag)
            {
                invocation
                    .options
                    .push((flag.to_owned(), "true".to_owned()));
                continue;
            }
            let Some(flag) = arg.strip_prefix("--") else {
                if invocation.command.is_none() {
                    invocation.command = Some(arg);
                } else {
                    invocation.positional.push(arg);
                }
                continue;
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => {
                    let value = args
                        .next()
                        .ok_or_else(|| format!("--{flag} needs a value"))?;
                    (flag.to_owned(), value)
                }
            };
            match name.as_str() {
                "endpoint-url" => invocation.endpoint_url = Some(value),
                "dynamodb-endpoint-url" => invocation.dynamodb_endpoint_url = Some(value),
                "region" => invocation.region = Some(value),
                "keys-table" => invocation.keys_table = Some(value),
                "pepper-env" => invocation.pepper_env = Some(value),
                _ => invocation.options.push((name, value)),
            }
        }
        Ok(invocation)
    }

    /// The command's options, refusing any it does not take.
    fn options(&self, allowed: &[&str]) -> Result<CommandOptions<'_>, String> {
        for (name, _) in &self.options {
            if !allowed.contains(&name.as_str()) {
                return Err(format!(
                    "{} does not take --{name}",
                    self.command.as_deref().unwrap_or("keenctl")
                ));
            }
        }
        Ok(CommandOptions(&self.options))
    }

    /// Exactly `count` positional arguments.
    fn positional(&self, names: &[&str]) -> Result<&[String], String> {
        if self.positional.len() == names.len() {
            Ok(&self.positional)
        } else {
            Err(format!(
                "{} takes {}",
                self.command.as_deref().unwrap_or("keenctl"),
                if names.is_empty() {
                    "no arguments".to_owned()
                } else {
                    names.join(" ")
                }
            ))
        }
    }
}

struct CommandOptions<'a>(&'a [(String, String)]);

impl CommandOptions<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable option, in order.
    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn require(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("--{name} is required"))
    }
}

/// What went wrong outside the request itself.
pub(crate) enum CliError {
    Usage(String),
    Failure(String),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let invocation = match Invocation::parse(std::env::args().skip(1)) {
        Ok(invocation) => invocation,
        Err(message) => return usage_error(&message),
    };
    match run(invocation).await {
        Ok(code) => code,
        Err(CliError::Usage(message)) => usage_error(&message),
        Err(CliError::Failure(message)) => {
            eprintln!("keenctl: {message}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("keenctl: {message}\n\n{USAGE}");
    ExitCode::from(EXIT_USAGE)
}

async fn run(invocation: Invocation) -> Result<ExitCode, CliError> {
    let command = invocation.command.clone().unwrap_or_default();
    let request = match command.as_str() {
        "" | "help" => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        "provision" => return provision_command(&invocation).await,
        "dead-letters" => return dead_letters::dead_letters_command(&invocation).await,
        "put-project" => {
            invocation.options(&[]).map_err(CliError::Usage)?;
            let [project] = invocation
                .positional(&["PROJECT"])
                .map_err(CliError::Usage)?
            else {
                unreachable!("positional checked the count");
            };
            json!({"action": "put_project", "project_id": project})
        }
        "create-key" | "import-key" => new_key_request(&invocation).map_err(CliError::Usage)?,
        "revoke-key" | "unrevoke-key" | "delete-key" => {
            invocation.options(&[]).map_err(CliError::Usage)?;
            let [project, key_id] = invocation
                .positional(&["PROJECT", "KEY_ID"])
                .map_err(CliError::Usage)?
            else {
                unreachable!("positional checked the count");
            };
            json!({"action": command.replace('-', "_"), "project_id": project, "key_id": key_id})
        }
        "list-keys" => {
            invocation.options(&[]).map_err(CliError::Usage)?;
            let [project] = invocation
                .positional(&["PROJECT"])
                .map_err(CliError::Usage)?
            else {
                unreachable!("positional checked the count");
            };
            json!({"action": "list_keys", "project_id": project})
        }
        other => return Err(CliError::Usage(format!("unknown command {other:?}"))),
    };

    let config = sdk_config(&invocation).await;
    let table = invocation
        .keys_table
        .clone()
        .or_else(|| std::env::var("KEYS_TABLE").ok())
        .ok_or_else(|| {
            CliError::Usage(
                "no Keys table: pass --keys-table or set KEYS_TABLE (keenctl provision prints it)"
                    .to_owned(),
            )
        })?;
    let pepper_env = invocation.pepper_env.as_deref().unwrap_or(PEPPER_ENV);
    let pepper = load_pepper_from_env(pepper_env, &config)
        .await
        .map_err(|error| CliError::Failure(error.to_string()))?;
    let dynamodb = dynamodb_client(&config, &invocation);
    let authorizer = Authorizer::new(KeysTable::new(dynamodb, table), pepper);
    let answer = authorizer
        .handle(request)
        .await
        .map_err(|error| CliError::Failure(error.to_string()))?;
    println!("{answer}");
    Ok(if answer.get("error").is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn provision_command(invocation: &Invocation) -> Result<ExitCode, CliError> {
    let options = invocation.options(&["prefix"]).map_err(CliError::Usage)?;
    invocation.positional(&[]).map_err(CliError::Usage)?;
    let prefix = options.get("prefix").unwrap_or("keen-");
    let config = sdk_config(invocation).await;
    let spec =
        DeploymentSpec::deployment().map_err(|error| CliError::Failure(error.to_string()))?;
    let sqs = sqs_client(&config, invocation);
    let names = provision(&dynamodb_client(&config, invocation), &sqs, &spec, prefix)
        .await
        .map_err(|error| CliError::Failure(error.to_string()))?;
    print!("{}", names.to_exports());
    if !names.without_ttl().is_empty() {
        // Said once, on stderr: the exports on stdout stay eval-able.
        eprintln!(
            "keenctl: this DynamoDB endpoint has no TimeToLive API; TTL is not enabled on {} \
             (their expired items stay until removed otherwise)",
            names.without_ttl().join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn new_key_request(invocation: &Invocation) -> Result<Value, String> {
    let import = invocation.command.as_deref() == Some("import-key");
    let allowed: &[&str] = if import {
        &["name", "kind", "permitted", "options", "key"]
    } else {
        &["name", "kind", "permitted", "options"]
    };
    let options = invocation.options(allowed)?;
    let [project] = invocation.positional(&["PROJECT"])? else {
        unreachable!("positional checked the count");
    };
    let permitted: Vec<&str> = options
        .get("permitted")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let key_options: Value = match options.get("options") {
        Some(text) => {
            serde_json::from_str(text).map_err(|error| format!("--options is not JSON: {error}"))?
        }
        None => Value::Null,
    };
    let mut request = json!({
        "action": if import { "import_key" } else { "create_key" },
        "project_id": project,
        "name": options.require("name")?,
        "kind": options.require("kind")?,
        "permitted": permitted,
        "options": key_options,
    });
    if import {
        let key = match options.require("key")? {
            "-" => read_key_from_stdin()?,
            key => key.to_owned(),
        };
        if let Some(object) = request.as_object_mut() {
            object.insert("key".to_owned(), Value::String(key));
        }
    }
    Ok(request)
}

/// The first line of standard input, without its line ending.
fn read_key_from_stdin() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| format!("reading the key from stdin failed: {error}"))?;
    let key = line.trim_end_matches(['\n', '\r']).to_owned();
    if key.is_empty() {
        return Err("--key - read an empty line from stdin".to_owned());
    }
    Ok(key)
}

async fn sdk_config(invocation: &Invocation) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = &invocation.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = &invocation.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let config = loader.load().await;
    let local = invocation.endpoint_url.is_some() || invocation.dynamodb_endpoint_url.is_some();
    if config.region().is_none() && local {
        // A local server ignores the region, but the SDK insists on one.
        return config
            .into_builder()
            .region(aws_config::Region::new("us-east-1"))
            .build();
    }
    config
}

/// As [`dynamodb_client`], for SQS.
fn sqs_client(config: &aws_config::SdkConfig, invocation: &Invocation) -> aws_sdk_sqs::Client {
    match &invocation.endpoint_url {
        Some(url) => aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(config)
                .endpoint_url(url)
                .build(),
        ),
        None => aws_sdk_sqs::Client::new(config),
    }
}

/// `--dynamodb-endpoint-url`, else an explicit `--endpoint-url`, wins over the endpoint
/// variables (`AWS_ENDPOINT_URL_DYNAMODB` included).
fn dynamodb_client(
    config: &aws_config::SdkConfig,
    invocation: &Invocation,
) -> aws_sdk_dynamodb::Client {
    let explicit = invocation
        .dynamodb_endpoint_url
        .as_ref()
        .or(invocation.endpoint_url.as_ref());
    match explicit {
        Some(url) => aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(config)
                .endpoint_url(url)
                .build(),
        ),
        None => aws_sdk_dynamodb::Client::new(config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Invocation {
        Invocation::parse(args.iter().map(|a| (*a).to_owned())).expect("parses")
    }

    #[test]
    fn global_and_command_options_anywhere() {
        let invocation = parse(&[
            "--endpoint-url",
            "http://127.0.0.1:5000",
            "create-key",
            "p1",
            "--name=tenant 7",
            "--kind",
            "access",
            "--permitted",
            "writes, queries",
            "--region",
            "eu-west-1",
        ]);
        assert_eq!(
            invocation.endpoint_url.as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(invocation.region.as_deref(), Some("eu-west-1"));
        assert_eq!(invocation.dynamodb_endpoint_url, None);
        let request = new_key_request(&invocation).expect("request");
        assert_eq!(
            request,
            json!({"action": "create_key", "project_id": "p1", "name": "tenant 7",
                   "kind": "access", "permitted": ["writes", "queries"], "options": null})
        );
    }

    #[test]
    fn dynamodb_has_an_endpoint_of_its_own() {
        let invocation = parse(&[
            "--endpoint-url=http://127.0.0.1:4566",
            "--dynamodb-endpoint-url",
            "http://127.0.0.1:4567",
            "list-keys",
            "p1",
        ]);
        assert_eq!(
            invocation.dynamodb_endpoint_url.as_deref(),
            Some("http://127.0.0.1:4567")
        );
        assert_eq!(
            invocation.endpoint_url.as_deref(),
            Some("http://127.0.0.1:4566")
        );
        assert!(invocation.options.is_empty(), "{:?}", invocation.options);
    }

    #[test]
    fn usage_errors_are_specific() {
        let missing_kind = parse(&["create-key", "p1", "--name", "n"]);
        assert_eq!(
            new_key_request(&missing_kind).expect_err("no kind"),
            "--kind is required"
        );
        let key_on_create = parse(&[
            "create-key",
            "p1",
            "--name",
            "n",
            "--kind",
            "write",
            "--key",
            "k",
        ]);
        assert!(
            new_key_request(&key_on_create)
                .expect_err("no --key")
                .contains("--key")
        );
        let two_projects = parse(&["create-key", "p1", "p2", "--name", "n", "--kind", "write"]);
        assert!(
            new_key_request(&two_projects)
                .expect_err("two")
                .contains("takes PROJECT")
        );
        let bad_options = parse(&[
            "create-key",
            "p1",
            "--name",
            "n",
            "--kind",
            "write",
            "--options",
            "{",
        ]);
        assert!(
            new_key_request(&bad_options)
                .expect_err("json")
                .contains("not JSON")
        );
        assert!(Invocation::parse(["--region".to_owned()]).is_err());
        let import = parse(&[
            "import-key",
            "p1",
            "--name",
            "n",
            "--kind",
            "write",
            "--key",
            "k".repeat(32).as_str(),
        ]);
        let request = new_key_request(&import).expect("request");
        assert_eq!(request["action"], "import_key");
        assert_eq!(request["key"], "k".repeat(32));
    }
}
