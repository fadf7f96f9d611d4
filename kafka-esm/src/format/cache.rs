//! The per-container schema cache: each schema fetched once, however many records and invocations
//! need it, and however many ask at the same moment.
//!
//! A Lambda container lives for many invocations; a schema id, once written, always names the same
//! schema. So the cache keeps every schema it fetched for the container's life, and a fetch that
//! fails is not kept: the next record asks again (a registry that was down may be back).
//!
//! Concurrent askers of one id share one fetch: each id has a [`tokio::sync::OnceCell`], and only
//! the first asker runs the source while the others wait for its answer.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::future::try_join_all;
use tokio::sync::OnceCell;

use super::schema::{Schema, SchemaError, SchemaId, SchemaSource};

/// A [`SchemaSource`] behind a cache shared by the formats of a container (wrap it in an `Arc`).
pub struct SchemaCache {
    source: Box<dyn SchemaSource>,
    cells: RwLock<HashMap<SchemaId, Arc<OnceCell<Arc<Schema>>>>>,
}

impl std::fmt::Debug for SchemaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCache")
            .field("source", &self.source.name())
            .field("cached", &self.len())
            .finish()
    }
}

impl SchemaCache {
    /// A cache in front of `source`.
    pub fn new(source: impl SchemaSource + 'static) -> Self {
        Self {
            source: Box::new(source),
            cells: RwLock::new(HashMap::new()),
        }
    }

    /// The schema with this id: from the cache, or fetched once from the source (concurrent
    /// callers for the same id wait for the one fetch). An error is not cached.
    pub async fn get(&self, id: &SchemaId) -> Result<Arc<Schema>, SchemaError> {
        let cell = self.cell(id);
        cell.get_or_try_init(|| async { self.source.schema(id).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// The schema with this id without waiting: from the cache, or from a source that can answer
    /// at once ([`SchemaSource::schema_now`]); else [`SchemaError::NotFetched`] (transient).
    pub fn get_now(&self, id: &SchemaId) -> Result<Arc<Schema>, SchemaError> {
        let cell = self.cell(id);
        if let Some(schema) = cell.get() {
            return Ok(schema.clone());
        }
        match self.source.schema_now(id) {
            Some(Ok(schema)) => {
                // Another caller may have set it meanwhile: the first one stays.
                let _ = cell.set(Arc::new(schema));
                Ok(cell.get().cloned().expect("the cell was just set"))
            }
            Some(Err(error)) => Err(error),
            None => Err(SchemaError::NotFetched { id: *id }),
        }
    }

    /// The schema with this id if it is cached.
    pub fn cached(&self, id: &SchemaId) -> Option<Arc<Schema>> {
        self.cells
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .and_then(|cell| cell.get().cloned())
    }

    /// Fetches every schema of `ids` not cached yet, concurrently, so that synchronous decodes
    /// find them. The first error is returned (the others' fetches still complete or fail alone).
    pub async fn prefetch(
        &self,
        ids: impl IntoIterator<Item = SchemaId>,
    ) -> Result<(), SchemaError> {
        let mut wanted: Vec<SchemaId> = ids
            .into_iter()
            .filter(|id| self.cached(id).is_none())
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        try_join_all(wanted.iter().map(|id| self.get(id))).await?;
        Ok(())
    }

    /// How many schemas are cached.
    pub fn len(&self) -> usize {
        self.cells
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|cell| cell.initialized())
            .count()
    }

    /// True when no schema is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the source calls itself.
    pub fn source_name(&self) -> String {
        self.source.name()
    }

    fn cell(&self, id: &SchemaId) -> Arc<OnceCell<Arc<Schema>>> {
        if let Some(cell) = self.cells.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return cell.clone();
        }
        self.cells
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(*id)
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::schema::SchemaKind;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts its fetches; slow, so that concurrent callers really overlap; fails while `down`.
    #[derive(Default)]
    struct Counting {
        fetches: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl SchemaSource for Arc<Counting> {
        async fn schema(&self, id: &SchemaId) -> Result<Schema, SchemaError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(SchemaError::Unavailable {
                    id: *id,
                    message: "connection refused".into(),
                });
            }
            match id {
                SchemaId::Confluent(404) => Err(SchemaError::NotFound {
                    id: *id,
                    source_name: String::new(),
                }),
                _ => Ok(Schema::new(SchemaKind::Avro, format!("\"schema {id}\""))),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn each_schema_is_fetched_once_even_under_concurrency() {
        let source = Arc::new(Counting::default());
        let cache = Arc::new(SchemaCache::new(source.clone()));
        let id = SchemaId::Confluent(7);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(&id).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().text, "\"schema 7\"");
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        assert_eq!(cache.get_now(&id).unwrap().text, "\"schema 7\"");
        cache
            .prefetch([id, SchemaId::Confluent(8), SchemaId::Confluent(8)])
            .await
            .unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_kept() {
        let source = Arc::new(Counting::default());
        source.down.store(true, Ordering::SeqCst);
        let cache = SchemaCache::new(source.clone());
        let id = SchemaId::Confluent(1);
        let err = cache.get(&id).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(cache.is_empty());
        source.down.store(false, Ordering::SeqCst);
        assert!(cache.get(&id).await.is_ok());
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
        let err = cache.get(&SchemaId::Confluent(404)).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
    }

    #[tokio::test]
    async fn a_source_that_must_wait_is_not_fetched_by_a_synchronous_get() {
        let source = Arc::new(Counting::default());
        let cache = SchemaCache::new(source.clone());
        let id = SchemaId::Confluent(3);
        assert_eq!(cache.get_now(&id), Err(SchemaError::NotFetched { id }));
        assert_eq!(source.fetches.load(Ordering::SeqCst), 0);
        cache.prefetch([id]).await.unwrap();
        assert!(cache.get_now(&id).is_ok());
    }
}
