//! The writing keys, looked up once per invocation and cached across invocations for at most
//! 30 seconds: with the gateway's own 30 s cache this bounds how long a revoked key keeps
//! writing to 60 s (product.md §5).

use keen_shared::adapters::keys_table::KeysTable;
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
        let lookups = missing.into_iter().map(|key| async move {
            // A key id that cannot even be parsed names no key: the record is refused as such.
            let result = match KeyId::parse(&key.1) {
                Ok(key_id) => self
                    .table
                    .get_key(&key.0, &key_id)
                    .await
                    .map_err(|e| e.to_string()),
                Err(_) => Ok(None),
            };
            (key, result)
        });
        for (key, result) in futures_join_all(lookups).await {
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

async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    // A handful of keys per invocation: polling them concurrently without spawning is enough.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, future) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => results[i] = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}
