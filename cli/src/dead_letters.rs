//! `keenctl dead-letters list|show|replay`: a project's dead letters through the same listing
//! the query API uses, and replay through the ingest's own code ([`keen_ingest::Ingest::replay`]),
//! so that a replayed record is judged, stored and counted exactly as a delivered one.

use crate::{CliError, CommandOptions, Invocation, dynamodb_client, sdk_config, sqs_client};
use keen_aws::dead_letters::{DeadLetterQuery, find_dead_letter, list_dead_letters};
use keen_ingest::{Config, Ingest, ReplayOutcome, ReplayReport};
use keen_shared::addon::ReferenceData;
use keen_shared::dead_letter::DeadLetter;
use std::process::ExitCode;
use std::sync::Arc;

/// Dead letters listed when `--limit` is not given.
const DEFAULT_LIST_LIMIT: usize = 50;

/// Widest message shown in a listing row (`show` prints it whole).
const MESSAGE_WIDTH: usize = 80;

pub(crate) async fn dead_letters_command(invocation: &Invocation) -> Result<ExitCode, CliError> {
    let [action] = invocation
        .positional(&["list|show|replay"])
        .map_err(CliError::Usage)?
    else {
        unreachable!("positional checked the count");
    };
    match action.as_str() {
        "list" => list(invocation).await,
        "show" => show(invocation).await,
        "replay" => replay(invocation).await,
        other => Err(CliError::Usage(format!(
            "unknown dead-letters action {other:?}: list, show or replay"
        ))),
    }
}

/// The DeadLetters table: `--dead-letters-table`, else `DEAD_LETTERS_TABLE`.
fn table(option: Option<&str>) -> Result<String, CliError> {
    option
        .map(str::to_owned)
        .or_else(|| std::env::var("DEAD_LETTERS_TABLE").ok())
        .ok_or_else(|| {
            CliError::Usage(
                "no DeadLetters table: pass --dead-letters-table or set DEAD_LETTERS_TABLE \
                 (keenctl provision prints it)"
                    .to_owned(),
            )
        })
}

/// An ISO-8601 date-time option as milliseconds.
fn instant(name: &str, value: Option<&str>) -> Result<Option<i64>, CliError> {
    value
        .map(|text| {
            keen_shared::timestamp::parse(text)
                .map(|t| t.unix_millis())
                .map_err(|error| {
                    CliError::Usage(format!(
                        "--{name} {text:?} is not an ISO-8601 date-time: {error} \
                         (e.g. 2024-03-09T16:00:00Z)"
                    ))
                })
        })
        .transpose()
}

/// The dead letters `--project`, `--collection`, `--code`, `--since` and `--until` select.
fn selection(options: &CommandOptions<'_>, limit: usize) -> Result<DeadLetterQuery, CliError> {
    Ok(DeadLetterQuery {
        project_id: options
            .require("project")
            .map_err(CliError::Usage)?
            .to_owned(),
        collection: options.get("collection").map(str::to_owned),
        code: options.get("code").map(str::to_owned),
        from_ms: instant("since", options.get("since"))?,
        to_ms: instant("until", options.get("until"))?,
        limit,
    })
}

async fn list(invocation: &Invocation) -> Result<ExitCode, CliError> {
    let options = invocation
        .options(&[
            "project",
            "collection",
            "code",
            "since",
            "until",
            "limit",
            "dead-letters-table",
        ])
        .map_err(CliError::Usage)?;
    let limit = match options.get("limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(text) => text.parse().map_err(|_| {
            CliError::Usage(format!("--limit {text:?} is not a non-negative number"))
        })?,
    };
    let query = selection(&options, limit)?;
    let table = table(options.get("dead-letters-table"))?;
    let client = dynamodb_client(&sdk_config(invocation).await, invocation);
    let letters = list_dead_letters(&client, &table, &query)
        .await
        .map_err(|error| CliError::Failure(error.to_string()))?;
    print!("{}", listing(&letters));
    Ok(ExitCode::SUCCESS)
}

/// The listing as an aligned table, one dead letter a line.
fn listing(letters: &[DeadLetter]) -> String {
    let header = ["FAILED_AT", "COLLECTION", "CODE", "ID", "SOURCE", "MESSAGE"].map(str::to_owned);
    let rows: Vec<[String; 6]> = letters
        .iter()
        .map(|l| {
            let mut message: String = l.error.message.chars().take(MESSAGE_WIDTH).collect();
            if l.error.message.chars().count() > MESSAGE_WIDTH {
                message.push('…');
            }
            [
                l.failed_at.clone(),
                l.collection.clone(),
                l.error.code.clone(),
                l.id.clone(),
                format!(
                    "{}/{}/{}",
                    l.source.topic, l.source.partition, l.source.offset
                ),
                message,
            ]
        })
        .collect();
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn show(invocation: &Invocation) -> Result<ExitCode, CliError> {
    let options = invocation
        .options(&["project", "collection", "id", "dead-letters-table"])
        .map_err(CliError::Usage)?;
    let require = |name| options.require(name).map_err(CliError::Usage);
    let (project, collection, id) = (require("project")?, require("collection")?, require("id")?);
    let table = table(options.get("dead-letters-table"))?;
    let client = dynamodb_client(&sdk_config(invocation).await, invocation);
    match find_dead_letter(&client, &table, project, collection, id)
        .await
        .map_err(|error| CliError::Failure(error.to_string()))?
    {
        Some(letter) => {
            let text = serde_json::to_string_pretty(&letter)
                .map_err(|error| CliError::Failure(format!("encoding the envelope: {error}")))?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "keenctl: no dead letter {id} in {project}/{collection} (replayed, expired after \
                 14 days, or never there)"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn replay(invocation: &Invocation) -> Result<ExitCode, CliError> {
    let options = invocation
        .options(&[
            "project",
            "collection",
            "code",
            "id",
            "since",
            "until",
            "dry-run",
        ])
        .map_err(CliError::Usage)?;
    // The ingest's own configuration: the replay writes what the ingest writes.
    let mut config = Config::from_env().map_err(|error| {
        CliError::Failure(format!(
            "{error} (replay needs the ingest's environment: eval \"$(keenctl provision)\")"
        ))
    })?;
    if let Some(keys_table) = &invocation.keys_table {
        config.keys_table = keys_table.clone();
    }
    let query = selection(&options, usize::MAX)?;
    let ids = options.all("id");
    let sdk = sdk_config(invocation).await;
    let dynamodb = dynamodb_client(&sdk, invocation);
    let mut letters = list_dead_letters(&dynamodb, &config.tables.dead_letters, &query)
        .await
        .map_err(|error| CliError::Failure(error.to_string()))?;
    if !ids.is_empty() {
        letters.retain(|l| ids.contains(&l.id.as_str()));
        for id in &ids {
            if !letters.iter().any(|l| l.id == *id) {
                println!("{id}  not found (replayed already, expired, or not selected)");
            }
        }
    }

    let data = Arc::new(ReferenceData::new(config.geoip_database.clone()));
    data.warm_up()
        .map_err(|error| CliError::Failure(error.to_string()))?;
    let ingest = Ingest::with_clients(config, dynamodb, sqs_client(&sdk, invocation), data);
    let dry_run = options.get("dry-run").is_some();
    let report = if dry_run {
        ingest.preview_replay(&letters).await
    } else {
        ingest.replay(&letters).await
    };
    print!("{}", replay_lines(&letters, &report, dry_run));
    let totals = report.totals();
    Ok(if totals.contains_key("failed") {
        ExitCode::from(crate::EXIT_FAILURE)
    } else if totals.contains_key("still_invalid") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One line per dead letter, then the totals.
fn replay_lines(letters: &[DeadLetter], report: &ReplayReport, dry_run: bool) -> String {
    let mut out = String::new();
    for result in &report.results {
        let source = letters
            .iter()
            .find(|l| l.id == result.id)
            .map(|l| {
                format!(
                    "{}/{}/{}",
                    l.source.topic, l.source.partition, l.source.offset
                )
            })
            .unwrap_or_default();
        let what = match &result.outcome {
            ReplayOutcome::Stored { keen_id } if dry_run => format!("would be stored ({keen_id})"),
            ReplayOutcome::Stored { keen_id } => format!("stored ({keen_id})"),
            ReplayOutcome::Duplicate { reason } => format!("duplicate: {reason}"),
            ReplayOutcome::StillInvalid { code, message } => {
                format!("still invalid ({code}): {message}")
            }
            ReplayOutcome::Failed { error } => format!("failed: {error}"),
        };
        out.push_str(&format!(
            "{}  {}  {source}  {what}\n",
            result.id, result.collection
        ));
    }
    let totals: Vec<String> = report
        .totals()
        .iter()
        .map(|(name, count)| format!("{} {count}", name.replace('_', " ")))
        .collect();
    out.push_str(&format!(
        "{}{} dead letters: {}\n",
        if dry_run { "dry run, " } else { "" },
        report.results.len(),
        if totals.is_empty() {
            "none selected".to_owned()
        } else {
            totals.join(", ")
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_aligned_and_long_messages_are_cut() {
        let letter: DeadLetter = serde_json::from_value(serde_json::json!({
            "id": "abc", "project_id": "p", "collection": "clicks",
            "error": {"code": "InvalidEventError", "message": "x".repeat(100)},
            "source": {"topic": "keen-inbound", "partition": 3, "offset": 7, "timestamp": 0,
                       "headers": []},
            "payload": "{", "failed_at": "2024-03-09T16:00:00.000Z", "service_version": "0"
        }))
        .expect("envelope");
        let text = listing(&[letter]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("FAILED_AT                 COLLECTION  CODE"));
        assert!(lines[1].contains("keen-inbound/3/7"));
        assert!(lines[1].ends_with(&format!("{}…", "x".repeat(MESSAGE_WIDTH))));
        assert_eq!(lines[0].find("SOURCE"), lines[1].find("keen-inbound"));
    }
}
