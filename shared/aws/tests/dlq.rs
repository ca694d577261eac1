//! Dead letter announcements (`keen_aws::dlq`) against a real moto server: packing
//! within SQS's limits, message attributes, and what moto itself accepts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{Message, SendMessageBatchRequestEntry};
use keen_aws::dlq::{Announcement, DeadLetterQueue, MAX_MESSAGE_BYTES, message_size};
use keen_aws::retry::WriteErrorKind;
use keen_testkit::{MotoServer, unique_prefix};

fn announcement(tag: usize, body_bytes: usize) -> Announcement {
    let prefix = format!("{tag}:");
    let body = format!(
        "{prefix}{}",
        "x".repeat(body_bytes.saturating_sub(prefix.len()))
    );
    Announcement {
        body,
        attributes: vec![
            ("project_id".into(), format!("project-{tag}")),
            ("collection".into(), "purchases".into()),
            ("error_code".into(), "InvalidEventError".into()),
        ],
        tag,
        dedupe_id: format!("dedupe-{tag}"),
    }
}

/// Everything on the queue, received until `expected` messages came or 20 s passed.
async fn drain(sqs: &aws_sdk_sqs::Client, queue_url: &str, expected: usize) -> Vec<Message> {
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.len() < expected && Instant::now() < deadline {
        let batch = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive_message");
        received.extend(batch.messages.unwrap_or_default());
    }
    received
}

#[tokio::test]
async fn twenty_five_announcements_one_of_a_full_mebibyte_arrive_with_their_attributes() {
    let moto = MotoServer::start();
    let provisioned = moto.provisioned(&unique_prefix("dlq")).await;
    let queue_url = provisioned.name("DEAD_LETTER_QUEUE_URL").to_owned();
    let mut messages: Vec<Announcement> = (0..25).map(|tag| announcement(tag, 2_000)).collect();
    // Tag 12: body and attributes exactly at SQS's limit.
    let attributes = message_size(&announcement(12, 0)) - "12:".len();
    messages[12] = announcement(12, MAX_MESSAGE_BYTES - attributes);
    assert_eq!(message_size(&messages[12]), MAX_MESSAGE_BYTES);
    let expected: HashMap<usize, Announcement> =
        messages.iter().map(|m| (m.tag, m.clone())).collect();

    let report = DeadLetterQueue::new(provisioned.sqs.clone(), &queue_url)
        .announce_all(messages)
        .await;

    assert!(report.is_success(), "{:?}", report.errors);
    // 0–9 | 10, 11 | 12 alone | 13–22 | 23, 24.
    assert_eq!(report.calls, 5);
    let received = drain(&provisioned.sqs, &queue_url, 25).await;
    assert_eq!(received.len(), 25);
    let mut seen = Vec::new();
    for message in received {
        let body = message.body().unwrap_or_default();
        let tag: usize = body
            .split(':')
            .next()
            .and_then(|tag| tag.parse().ok())
            .unwrap_or_else(|| panic!("unexpected body {:.40}", body));
        let sent = &expected[&tag];
        assert_eq!(body, sent.body);
        let attributes = message.message_attributes().cloned().unwrap_or_default();
        assert_eq!(attributes.len(), 3);
        for (name, value) in &sent.attributes {
            let received = &attributes[name];
            assert_eq!(received.data_type(), "String");
            assert_eq!(
                received.string_value(),
                Some(value.as_str()),
                "{name} of {tag}"
            );
        }
        seen.push(tag);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_announcement_over_the_limit_is_refused_without_a_call_and_the_rest_is_sent() {
    let moto = MotoServer::start();
    let provisioned = moto.provisioned(&unique_prefix("dlq-big")).await;
    let queue_url = provisioned.name("DEAD_LETTER_QUEUE_URL").to_owned();
    let attributes = message_size(&announcement(1, 0)) - "1:".len();
    let messages = vec![
        announcement(0, 100),
        announcement(1, MAX_MESSAGE_BYTES - attributes + 1),
        announcement(2, 100),
    ];

    let report = DeadLetterQueue::new(provisioned.sqs.clone(), &queue_url)
        .announce_all(messages)
        .await;

    assert_eq!(report.failed_tags, [1]);
    assert_eq!(report.tags_of(WriteErrorKind::Permanent), [1]);
    assert!(
        report.errors[0].2.contains("1048577 bytes"),
        "{:?}",
        report.errors
    );
    assert_eq!(report.calls, 1);
    assert_eq!(drain(&provisioned.sqs, &queue_url, 2).await.len(), 2);
}

/// What moto 5.2 enforces, measured, so that nobody relies on moto for SQS's limits: one message
/// body up to 1 MiB (SQS's limit since 2025, also counting attributes: moto does not), and at most
/// 1 MiB of bodies per batch (`BatchRequestTooLong`).
#[tokio::test]
async fn moto_limits() {
    let moto = MotoServer::start();
    let provisioned = moto.provisioned(&unique_prefix("dlq-limits")).await;
    let sqs = &provisioned.sqs;
    let queue_url = provisioned.name("DEAD_LETTER_QUEUE_URL");
    let send = |bytes: usize| {
        sqs.send_message()
            .queue_url(queue_url)
            .message_body("x".repeat(bytes))
            .message_attributes(
                "error_code",
                aws_sdk_sqs::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("InvalidEventError")
                    .build()
                    .expect("attribute"),
            )
            .send()
    };
    assert!(
        send(MAX_MESSAGE_BYTES).await.is_ok(),
        "moto takes a 1 MiB body, attributes aside"
    );
    let err = send(MAX_MESSAGE_BYTES + 1).await.expect_err("over 1 MiB");
    eprintln!(
        "moto, 1 MiB + 1: {}",
        aws_sdk_sqs::error::DisplayErrorContext(&err)
    );

    let entry = |id: &str, bytes: usize| {
        SendMessageBatchRequestEntry::builder()
            .id(id)
            .message_body("y".repeat(bytes))
            .build()
            .expect("entry")
    };
    let err = sqs
        .send_message_batch()
        .queue_url(queue_url)
        .entries(entry("0", 600_000))
        .entries(entry("1", 600_000))
        .send()
        .await
        .expect_err("1.2 MB in one batch");
    let code = err
        .as_service_error()
        .and_then(|e| aws_sdk_sqs::error::ProvideErrorMetadata::code(e));
    eprintln!("moto, batch of 1.2 MB: {code:?}");
    assert!(
        code.is_some_and(|code| code.contains("BatchRequestTooLong")),
        "{code:?}"
    );
}

/// The local stack's queue outlives moto (`scripts/moto_server.py --state-file`): announcements
/// sent before a SIGKILL are on the queue after the restart, with their attributes, and one
/// received and deleted before it does not come back.
#[tokio::test]
async fn announcements_survive_a_restart_with_a_state_file() {
    let data = keen_testkit::TempDir::new("dlq-state");
    let mut moto = MotoServer::start_at(Some(&data.path().join("sqs.pickle")));
    let provisioned = moto.provisioned(&unique_prefix("dlq-keep")).await;
    let queue_url = provisioned.name("DEAD_LETTER_QUEUE_URL").to_owned();
    let messages: Vec<Announcement> = (0..3).map(|tag| announcement(tag, 100)).collect();
    let report = DeadLetterQueue::new(provisioned.sqs.clone(), &queue_url)
        .announce_all(messages)
        .await;
    assert!(report.is_success(), "{:?}", report.errors);
    // One message, not ten: the others must stay visible for after the restart.
    let first = provisioned
        .sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(1)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive_message")
        .messages
        .unwrap_or_default();
    assert_eq!(first.len(), 1, "{first:?}");
    let handled = first[0].body().unwrap_or_default().to_owned();
    provisioned
        .sqs
        .delete_message()
        .queue_url(&queue_url)
        .receipt_handle(first[0].receipt_handle().unwrap_or_default())
        .send()
        .await
        .expect("delete_message");

    moto.restart();

    let after = drain(&provisioned.sqs, &queue_url, 2).await;
    let bodies: Vec<&str> = after.iter().filter_map(Message::body).collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(!bodies.contains(&handled.as_str()), "{bodies:?}");
    for message in &after {
        let attributes = message.message_attributes().expect("attributes");
        assert_eq!(
            attributes["collection"].string_value(),
            Some("purchases"),
            "{attributes:?}"
        );
    }
}
