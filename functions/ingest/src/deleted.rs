//! Step 6b of a batch: deleted events stay deleted ([`keen_aws::deletion`]). Events are written
//! with BatchWriteItem, which overwrites a deleted event's tombstone when its record comes again
//! (a redelivery, an idempotent producer's resend, a rewound event source mapping); where a
//! collection this batch wrote to holds deletions, the events the deletion ledger names get their
//! tombstones back. Such a record is not counted again: it sits below its partition's
//! high-water mark, and the deletion already took it off the counter.

use crate::Ingest;
use crate::fate::{Entry, Fate};
use keen_aws::deletion::{self, Doomed};
use std::collections::{HashMap, HashSet};

impl Ingest {
    /// Returns the collections of the batch that hold deletions (their recorded first and last
    /// event times may have moved in since this process learned them).
    pub(crate) async fn keep_deleted(
        &self,
        entries: &mut [Entry<'_>],
        now_ms: i64,
    ) -> HashSet<(String, String)> {
        let stored: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].to_store().is_some())
            .collect();
        let mut collections: Vec<(String, String)> = stored
            .iter()
            .filter_map(|&i| entries[i].to_store())
            .map(|event| (event.project_id.clone(), event.collection.clone()))
            .collect();
        collections.sort();
        collections.dedup();
        if collections.is_empty() {
            return HashSet::new();
        }
        let tables = &self.config.tables;
        let flagged = match deletion::collections_with_deletions(
            &self.dynamodb,
            &tables.collections,
            &collections,
        )
        .await
        {
            Ok(flagged) => flagged,
            Err(error) => {
                tracing::warn!(%error, "deletion check failed; the records will be retried");
                retry(entries, &stored);
                return HashSet::new();
            }
        };
        if flagged.is_empty() {
            return flagged;
        }
        let mut by_key: HashMap<(String, String), usize> = HashMap::new();
        for &i in &stored {
            let Some(event) = entries[i].to_store() else {
                continue;
            };
            if !flagged.contains(&(event.project_id.clone(), event.collection.clone())) {
                continue;
            }
            by_key.insert(self.event_key(event), i);
        }
        let keys: Vec<(String, String)> = by_key.keys().cloned().collect();
        let deleted = match deletion::deleted_among(&self.dynamodb, &tables.events, &keys).await {
            Ok(deleted) => deleted,
            Err(error) => {
                tracing::warn!(%error, "deletion ledger read failed; the records will be retried");
                retry(entries, &by_key.values().copied().collect::<Vec<_>>());
                return flagged;
            }
        };
        let mut doomed = Vec::with_capacity(deleted.len());
        let mut tags = Vec::with_capacity(deleted.len());
        for (pk, sort_key) in deleted {
            let Some(&i) = by_key.get(&(pk.clone(), sort_key.clone())) else {
                continue;
            };
            let Some(event) = entries[i].to_store() else {
                continue;
            };
            let source = entries[i].record.source();
            // The parts this batch just wrote again: as many as when it wrote them.
            let parts = self.event_items(event, &source).parts.len();
            doomed.push(Doomed {
                pk,
                sort_key,
                source,
                parts,
            });
            tags.push(i);
        }
        if doomed.is_empty() {
            return flagged;
        }
        tracing::info!(
            events = doomed.len(),
            "records of deleted events came again; they stay deleted"
        );
        if let Err(error) =
            deletion::restore_tombstones(&self.batcher, &tables.events, &doomed, now_ms).await
        {
            tracing::warn!(%error, "restoring tombstones failed; the records will be retried");
            retry(entries, &tags);
            return flagged;
        }
        for &i in &tags {
            entries[i].stays_deleted = true;
        }
        flagged
    }
}

fn retry(entries: &mut [Entry<'_>], which: &[usize]) {
    for &i in which {
        entries[i].fate = Fate::Retry;
    }
}
