//! What this process remembers of the Collections table between invocations.

use keen_aws::collections::CollectionUpdate;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What this process knows of the Collections table: the (path, type) pairs each collection's
/// schema already holds or can never hold (past its bounds), the widest first/last event times
/// written, and whether the schema says paths were left out. Lets a batch skip the schema read
/// and write when it brings nothing new. Bounded: forgotten whole when full (the next batches
/// read again).
#[derive(Default)]
pub(crate) struct CollectionMemo {
    paths: HashSet<u64>,
    collections: HashMap<(String, String), Known>,
}

/// What is known written of one collection.
#[derive(Clone, Copy)]
struct Known {
    first_ms: i64,
    last_ms: i64,
    truncated: bool,
}

impl CollectionMemo {
    const MAX_PATHS: usize = 262_144;
    const MAX_COLLECTIONS: usize = 16_384;

    fn pair(project: &str, collection: &str, path: &str, kind: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (project, collection, path, kind).hash(&mut hasher);
        hasher.finish()
    }

    /// `update` without what is known already.
    pub(crate) fn novel(
        &self,
        project: &str,
        collection: &str,
        mut update: CollectionUpdate,
    ) -> CollectionUpdate {
        update.paths.retain(|path, kinds| {
            kinds.split('|').any(|kind| {
                !self
                    .paths
                    .contains(&Self::pair(project, collection, path, kind))
            })
        });
        let key = (project.to_owned(), collection.to_owned());
        if let Some(known) = self.collections.get(&key) {
            update.first_ms = update.first_ms.filter(|&f| f < known.first_ms);
            update.last_ms = update.last_ms.filter(|&l| l > known.last_ms);
            update.truncated &= !known.truncated;
        }
        update
    }

    /// Records what a successful update made known.
    pub(crate) fn learn(
        &mut self,
        project: &str,
        collection: &str,
        update: &CollectionUpdate,
        recorded: Option<&BTreeMap<String, String>>,
    ) {
        if self.paths.len() >= Self::MAX_PATHS || self.collections.len() >= Self::MAX_COLLECTIONS {
            self.paths.clear();
            self.collections.clear();
        }
        for (path, kinds) in update.paths.iter().chain(recorded.into_iter().flatten()) {
            for kind in kinds.split('|') {
                self.paths
                    .insert(Self::pair(project, collection, path, kind));
            }
        }
        let known = self
            .collections
            .entry((project.to_owned(), collection.to_owned()))
            .or_insert(Known {
                first_ms: i64::MAX,
                last_ms: i64::MIN,
                truncated: false,
            });
        if let Some(first) = update.first_ms {
            known.first_ms = known.first_ms.min(first);
        }
        if let Some(last) = update.last_ms {
            known.last_ms = known.last_ms.max(last);
        }
        known.truncated |= update.truncated;
    }
}
