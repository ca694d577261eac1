//! The writing keys, looked up once per invocation through the shared Keys-table reader
//! (`keen_aws::keys_reader`, one GetItem per key, trusted for at most 30 seconds): with the
//! gateway's own check this bounds how long a revoked key keeps writing to 60 s (product.md §5).

use keen_aws::keys_reader::KeysReader;
use keen_aws::keys_table::KeysTable;
use keen_shared::key::KeyModel;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

type Wanted = (String, String);

/// Keys by (project, key id), through the shared reader.
pub struct KeyCache {
    reader: Arc<KeysReader>,
}

impl KeyCache {
    /// An empty cache over the Keys table.
    pub fn new(table: KeysTable) -> Self {
        KeyCache {
            reader: Arc::new(KeysReader::new(table)),
        }
    }

    /// Looks up every wanted key (in parallel; from the cache when fresh). `Ok(None)`: no such
    /// key; an `Err` means the lookup failed transiently and the records must be retried.
    pub async fn lookup_all(
        &self,
        wanted: HashSet<Wanted>,
    ) -> HashMap<Wanted, Result<Option<Arc<KeyModel>>, String>> {
        let mut lookups = tokio::task::JoinSet::new();
        for key in wanted {
            let reader = Arc::clone(&self.reader);
            lookups.spawn(async move {
                let result = reader.key(&key.0, &key.1).await.map_err(|e| e.to_string());
                (key, result)
            });
        }
        // A lookup task that is lost leaves its key out of the answer: its records are retried.
        let mut out = HashMap::new();
        while let Some(joined) = lookups.join_next().await {
            let Ok((key, result)) = joined else { continue };
            if let Err(error) = &result {
                tracing::warn!(project_id = %key.0, key_id = %key.1, %error, "key lookup failed");
            }
            out.insert(key, result);
        }
        out
    }
}
