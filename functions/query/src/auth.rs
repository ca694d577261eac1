//! Who may query: the master key, the read key, or an access key permitting `queries`
//! (product.md §9); dead letters need the master key. Keys are found by their peppered digest,
//! compared in constant time against every key of the project ([`find_digested_key_by_password`]);
//! keys are read without their SCRAM verifiers, which the query function has no use for.
//!
//! A project's keys are read through the Keys-table reader the gateway and ingest share
//! (`keen_aws::keys_reader`): a revoked read key stops answering within its 30 s bound. An unknown project and a wrong key get the same
//! answer, so project ids cannot be enumerated.

use crate::analysis::QueryError;
use keen_aws::items::StoreError;
use keen_aws::keys_reader::KeysReader;
use keen_aws::keys_table::KeysTable;
use keen_aws::secrets::Pepper;
use keen_shared::key::{DigestedKey, KeyKind, KeyModel, Permission, find_digested_key_by_password};
use std::sync::Arc;

/// What a route needs of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Count, extraction, collections.
    Queries,
    /// The project's dead letters.
    Master,
}

/// Why a request is not let through.
#[derive(Debug)]
pub enum AuthError {
    /// No key, a wrong key, or a key that may not do this.
    Denied(QueryError),
    /// The Keys table could not be read.
    Store(StoreError),
}

/// The Keys table through the shared reader, and the pepper keys are digested under.
pub struct KeyDirectory {
    reader: KeysReader,
    pepper: Pepper,
}

impl KeyDirectory {
    /// A directory over `table`, checking keys under `pepper`.
    pub fn new(table: KeysTable, pepper: Pepper) -> Self {
        KeyDirectory {
            reader: KeysReader::new(table),
            pepper,
        }
    }

    async fn keys_of(&self, project: &str) -> Result<Arc<Vec<DigestedKey>>, StoreError> {
        self.reader
            .digested_keys(project)
            .await
            .map_err(|error| StoreError {
                operation: "read keys",
                message: error.to_string(),
            })
    }

    /// The key model of `api_key` when it may do `needed` in `project`.
    pub async fn authorize(
        &self,
        project: &str,
        api_key: Option<&str>,
        needed: Access,
    ) -> Result<KeyModel, AuthError> {
        let Some(api_key) = api_key.filter(|k| !k.is_empty()) else {
            return Err(AuthError::Denied(QueryError::InvalidApiKey(
                "An API key is required: pass it as the api_key parameter or in the \
                 Authorization header."
                    .to_owned(),
            )));
        };
        let keys = self.keys_of(project).await.map_err(AuthError::Store)?;
        let Some(key) = find_digested_key_by_password(self.pepper.as_bytes(), api_key, &keys)
            .filter(|key| key.model.is_active)
        else {
            return Err(AuthError::Denied(QueryError::InvalidApiKey(format!(
                "The API key is not a valid key of project {project}."
            ))));
        };
        let allowed = match needed {
            Access::Queries => key.model.permits(Permission::Queries),
            Access::Master => key.model.kind == KeyKind::Master,
        };
        if !allowed {
            let what = match needed {
                Access::Queries => {
                    "This key may not run queries: use the master key, the read key, or an \
                     access key permitting \"queries\"."
                }
                Access::Master => {
                    "Dead letters and deletions need the master key; this key is not the \
                     project's master key."
                }
            };
            return Err(AuthError::Denied(QueryError::InvalidApiKey(
                what.to_owned(),
            )));
        }
        Ok(key.model.clone())
    }
}
