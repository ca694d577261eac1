//! The one reader of the Keys table that the gateway, ingest and query share: one bounded cache,
//! one revocation bound ([`KEYS_TTL`]), absences remembered apart from what exists.
//!
//! Each process reads the table the one way its IAM role allows (template.yaml), so the reader
//! offers three views, each cached the same way:
//! - [`KeysReader::credentials`]: a project's salt and every key with its SCRAM verifiers (the
//!   gateway authenticates with them);
//! - [`KeysReader::key`]: one key's model by id, a single GetItem (ingest checks every record's
//!   key, and its role may not Query the table);
//! - [`KeysReader::digested_keys`]: a project's keys without verifiers (the query function's
//!   role may read nothing more).
//!
//! Bounds: a key revoked or deleted stops being accepted by a process within [`KEYS_TTL`] of the
//! change; each cache holds at most [`KEYS_CACHED`] entries and as many absences, kept apart so
//! that guessed project ids or key ids never evict what exists, and cost one read each per TTL.

use crate::keys_table::{KeysTable, KeysTableError};
use crate::retry::BoxFuture;
use keen_shared::key::{DigestedKey, KeyId, KeyModel, ProjectSalt, StoredKey};
use quick_cache::sync::Cache;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long what was read (or found missing) is trusted: a revoked key stops being accepted
/// within this. The gateway and ingest check each in turn, so a record of a revoked key is
/// refused within twice this at most (product.md §5).
pub const KEYS_TTL: Duration = Duration::from_secs(30);

/// Entries kept per view, and as many absences.
pub const KEYS_CACHED: usize = 100_000;

/// One project's SCRAM salt and keys (the gateway's view).
#[derive(Debug)]
pub struct ProjectCredentials {
    pub salt: ProjectSalt,
    pub keys: Vec<StoredKey>,
}

/// A bounded cache with a TTL; what is missing is remembered apart.
struct TtlCache<K, V> {
    found: Cache<K, (Instant, Arc<V>)>,
    missing: Cache<K, Instant>,
}

impl<K: Eq + Hash + Clone, V> TtlCache<K, V> {
    fn new() -> Self {
        TtlCache {
            found: Cache::new(KEYS_CACHED),
            missing: Cache::new(KEYS_CACHED),
        }
    }

    /// The cached answer when fresh, else `load`'s, remembered. The load is boxed: its type
    /// would otherwise nest into every caller's future (the gateway's connection future is deep
    /// enough already).
    async fn get<'a>(
        &self,
        key: &K,
        load: impl FnOnce() -> BoxFuture<'a, Result<Option<V>, KeysTableError>>,
    ) -> Result<Option<Arc<V>>, KeysTableError> {
        if let Some((at, value)) = self.found.get(key)
            && at.elapsed() < KEYS_TTL
        {
            return Ok(Some(value));
        }
        if let Some(at) = self.missing.get(key)
            && at.elapsed() < KEYS_TTL
        {
            return Ok(None);
        }
        match load().await? {
            Some(value) => {
                let value = Arc::new(value);
                self.missing.remove(key);
                self.found
                    .insert(key.clone(), (Instant::now(), Arc::clone(&value)));
                Ok(Some(value))
            }
            None => {
                self.found.remove(key);
                self.missing.insert(key.clone(), Instant::now());
                Ok(None)
            }
        }
    }
}

/// The Keys table behind the shared cache; see the module documentation.
pub struct KeysReader {
    table: KeysTable,
    credentials: TtlCache<String, ProjectCredentials>,
    keys: TtlCache<(String, String), KeyModel>,
    digested: TtlCache<String, Vec<DigestedKey>>,
}

impl KeysReader {
    /// A reader over `table`, with empty caches.
    pub fn new(table: KeysTable) -> Self {
        KeysReader {
            table,
            credentials: TtlCache::new(),
            keys: TtlCache::new(),
            digested: TtlCache::new(),
        }
    }

    /// The table read.
    pub fn table(&self) -> &KeysTable {
        &self.table
    }

    /// The project's salt and keys; `None` for a project without a salt item (which costs one
    /// read, not a read and a query).
    pub async fn credentials(
        &self,
        project_id: &str,
    ) -> Result<Option<Arc<ProjectCredentials>>, KeysTableError> {
        self.credentials
            .get(&project_id.to_owned(), || {
                Box::pin(async {
                    let Some(salt) = self.table.get_project(project_id).await? else {
                        return Ok(None);
                    };
                    let keys = self.table.list_keys(project_id).await?;
                    Ok(Some(ProjectCredentials { salt, keys }))
                })
            })
            .await
    }

    /// The model of one key; `None` when the project has no such key (or `key_id` is no key
    /// id at all).
    pub async fn key(
        &self,
        project_id: &str,
        key_id: &str,
    ) -> Result<Option<Arc<KeyModel>>, KeysTableError> {
        self.keys
            .get(&(project_id.to_owned(), key_id.to_owned()), || {
                Box::pin(async {
                    let Ok(parsed) = KeyId::parse(key_id) else {
                        return Ok(None);
                    };
                    Ok(self
                        .table
                        .get_key(project_id, &parsed)
                        .await?
                        .map(|stored| stored.model))
                })
            })
            .await
    }

    /// The project's keys without their verifiers (none for an unknown project).
    pub async fn digested_keys(
        &self,
        project_id: &str,
    ) -> Result<Arc<Vec<DigestedKey>>, KeysTableError> {
        let keys = self
            .digested
            .get(&project_id.to_owned(), || {
                Box::pin(async {
                    let keys = self.table.list_digested_keys(project_id).await?;
                    Ok((!keys.is_empty()).then_some(keys))
                })
            })
            .await?;
        Ok(keys.unwrap_or_default())
    }
}
