//! template.yaml provisioned on a real moto server, then described back.

use aws_sdk_dynamodb::types::{BillingMode, KeyType, TimeToLiveStatus};
use aws_sdk_sqs::types::QueueAttributeName;
use keen_aws::provision::{DeploymentSpec, ProvisionError, provision};
use keen_testkit::{MotoServer, unique_prefix};

#[tokio::test]
async fn every_table_and_queue_of_the_template_is_created_as_declared() {
    let moto = MotoServer::start();
    let prefix = unique_prefix("prov");
    let provisioned = moto.provisioned(&prefix).await;
    let spec = DeploymentSpec::deployment().expect("template parses");

    let vars: Vec<_> = provisioned.names.iter().map(|(var, _)| var).collect();
    assert_eq!(
        vars,
        [
            "COLLECTIONS_TABLE",
            "COUNTERS_TABLE",
            "DEAD_LETTERS_TABLE",
            "DEAD_LETTER_QUEUE_URL",
            "DEDUPE_TABLE",
            "EVENTS_TABLE",
            "KEYS_TABLE"
        ]
    );

    for table in &spec.tables {
        let name = provisioned.name(&table.env_var());
        assert_eq!(name, format!("{prefix}{}", table.logical_id));
        let described = provisioned
            .dynamodb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .expect("table exists");
        let description = described.table().expect("description");
        let keys: Vec<(String, KeyType)> = description
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
            .collect();
        let expected: Vec<(String, KeyType)> = table
            .key_schema
            .iter()
            .map(|k| (k.attribute_name.clone(), KeyType::from(k.key_type.as_str())))
            .collect();
        assert_eq!(keys, expected, "{name}");
        assert_eq!(
            description
                .billing_mode_summary()
                .and_then(|b| b.billing_mode()),
            Some(&BillingMode::PayPerRequest),
            "{name}"
        );

        let ttl = provisioned
            .dynamodb
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
            .expect("TTL described");
        let ttl = ttl.time_to_live_description().expect("TTL description");
        match &table.ttl_attribute {
            Some(attribute) => {
                assert_eq!(ttl.attribute_name(), Some(attribute.as_str()), "{name}");
                assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
            }
            None => assert_ne!(
                ttl.time_to_live_status(),
                Some(&TimeToLiveStatus::Enabled),
                "{name}"
            ),
        }
    }
    assert_eq!(
        spec.table("DedupeTable")
            .and_then(|t| t.ttl_attribute.as_deref()),
        Some("expires_at")
    );

    let url = provisioned.name("DEAD_LETTER_QUEUE_URL");
    assert!(url.ends_with(&format!("{prefix}DeadLetterQueue")), "{url}");
    let attributes = provisioned
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("queue attributes");
    let attributes = attributes.attributes().expect("attributes");
    assert_eq!(
        attributes
            .get(&QueueAttributeName::MessageRetentionPeriod)
            .map(String::as_str),
        Some("1209600")
    );

    // Idempotent: a second run reuses everything and answers the same names.
    let again = provision(&provisioned.dynamodb, &provisioned.sqs, &spec, &prefix)
        .await
        .expect("second run");
    assert_eq!(again, provisioned.names);

    // Another prefix is a separate set of resources on the same server.
    let other = moto.provisioned(&unique_prefix("other")).await;
    assert_ne!(other.name("KEYS_TABLE"), provisioned.name("KEYS_TABLE"));

    // After a reset nothing is left.
    moto.reset();
    let tables = moto
        .dynamodb()
        .list_tables()
        .send()
        .await
        .expect("list tables");
    assert!(
        tables.table_names().is_empty(),
        "{:?}",
        tables.table_names()
    );
}

#[tokio::test]
async fn an_existing_table_with_another_key_schema_is_a_conflict() {
    let moto = MotoServer::start();
    let prefix = unique_prefix("conflict");
    let template = r#"
Resources:
  KeysTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
"#;
    let stale = DeploymentSpec::parse(template).expect("parses");
    let (dynamodb, sqs) = (moto.dynamodb(), moto.sqs());
    provision(&dynamodb, &sqs, &stale, &prefix)
        .await
        .expect("the stale table");
    let spec = DeploymentSpec::deployment().expect("template parses");
    let error = provision(&dynamodb, &sqs, &spec, &prefix)
        .await
        .expect_err("KeysTable differs");
    match &error {
        ProvisionError::Conflict { name, .. } => assert_eq!(name, &format!("{prefix}KeysTable")),
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(error.to_string().contains("another prefix"), "{error}");

    let error = provision(&dynamodb, &sqs, &spec, "bad prefix")
        .await
        .expect_err("space");
    assert!(
        matches!(error, ProvisionError::InvalidPrefix { .. }),
        "{error}"
    );
}
