//! Events, counters, collections, dedupe, dead letters: DynamoDB and SQS (being written).
