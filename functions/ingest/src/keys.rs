//! The writing keys, looked up once per invocation and cached across invocations for at most
//! 30 seconds: with the gateway's own 30 s cache this bounds how long a revoked key keeps
//! writing to 60 s (product.md §5).

use keen_aws::keys_table::KeysTable;
use keen_shared::key::{KeyId, KeyModel};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a looked-up key (or its absence) is trusted.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

type CacheKey = (String, String);

/// Keys by (project, key id); `None` caches "no such key".
pub struct KeyCache {
    table: KeysTable,
    entries: Mutex<HashMap<CacheKey, (Instant, Option<KeyModel>)>>,
}

impl KeyCache {
    /// An empty cache over the Keys table.
    pub fn new(table: KeysTable) -> Self {
        KeyCache {
            table,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Looks up every wanted key: from the cache when fresh, else from the table (in parallel).
    /// An `Err` means the lookup failed transiently and the records must be retried.
    pub async fn lookup_all(
        &self,
        wanted: HashSet<CacheKey>,
    ) -> HashMap<CacheKey, Result<Option<KeyModel>, String>> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            for key in wanted {
                match entries.get(&key) {
                    Some((at, model)) if at.elapsed() < KEY_CACHE_TTL => {
                        out.insert(key, Ok(model.clone()));
                    }
                    _ => missing.push(key),
                }
            }
        }
        let mut lookups = tokio::task::JoinSet::new();
        for key in missing {
            let table = self.table.clone();
            lookups.spawn(async move {
                // A key id that cannot even be parsed names no key: the record is refused as such.
                let result = match KeyId::parse(&key.1) {
                    Ok(key_id) => table
                        .get_key(&key.0, &key_id)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(_) => Ok(None),
                };
                (key, result)
            });
        }
        // A lookup task that is lost leaves its key out of the answer: its records are retried.
        while let Some(joined) = lookups.join_next().await {
            let Ok((key, result)) = joined else { continue };
            match result {
                Ok(stored) => {
                    let model = stored.map(|s| s.model);
                    self.entries
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.clone(), (Instant::now(), model.clone()));
                    out.insert(key, Ok(model));
                }
                Err(error) => {
                    tracing::warn!(project_id = %key.0, key_id = %key.1, %error, "key lookup failed");
                    out.insert(key, Err(error));
                }
            }
        }
        out
    }
}
