//! The per-container schema cache: each schema fetched once, however many records and invocations
//! need it, and however many ask at the same moment.
//!
//! A Lambda container lives for many invocations; a schema id, once written, always names the same
//! schema. So the cache keeps every schema it fetched for the container's life, and the poison
//! answers too (not found, unusable): every record of that schema is dead-lettered without asking
//! again, even when the answer came to a prefetch and the record is decoded later. A transient
//! failure (the source unreachable) is not kept: the next record asks again.
//!
//! Concurrent askers of one id share one fetch: each id has a [`tokio::sync::OnceCell`], and only
//! the first asker runs the source while the others wait for its answer.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::future::try_join_all;
use tokio::sync::OnceCell;

use super::schema::{Schema, SchemaError, SchemaId, SchemaSource};

/// What the source answered for an id, once it is final: the schema, or a poison error.
type Answer = Result<Arc<Schema>, SchemaError>;

/// A [`SchemaSource`] behind a cache shared by the formats of a container (wrap it in an `Arc`).
pub struct SchemaCache {
    source: Box<dyn SchemaSource>,
    cells: RwLock<HashMap<SchemaId, Arc<OnceCell<Answer>>>>,
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
        Self::from_boxed(Box::new(source))
    }

    /// A cache in front of a source already boxed (one chosen at run time).
    pub fn from_boxed(source: Box<dyn SchemaSource>) -> Self {
        Self {
            source,
            cells: RwLock::new(HashMap::new()),
        }
    }

    /// The schema with this id: from the cache, or fetched once from the source (concurrent
    /// callers for the same id wait for the one fetch). A transient error is not cached; a
    /// poison one is.
    pub async fn get(&self, id: &SchemaId) -> Result<Arc<Schema>, SchemaError> {
        let cell = self.cell(id);
        cell.get_or_try_init(|| async {
            match self.source.schema(id).await {
                Ok(schema) => Ok(Ok(Arc::new(schema))),
                Err(error) if error.is_transient() => Err(error),
                Err(poison) => Ok(Err(poison)),
            }
        })
        .await?
        .clone()
    }

    /// The schema with this id without waiting: from the cache, or from a source that can answer
    /// at once ([`SchemaSource::schema_now`]); else [`SchemaError::NotFetched`] (transient).
    pub fn get_now(&self, id: &SchemaId) -> Result<Arc<Schema>, SchemaError> {
        let cell = self.cell(id);
        if let Some(answer) = cell.get() {
            return answer.clone();
        }
        let answer = match self.source.schema_now(id) {
            Some(Ok(schema)) => Ok(Arc::new(schema)),
            Some(Err(error)) if error.is_transient() => return Err(error),
            Some(Err(poison)) => Err(poison),
            None => return Err(SchemaError::NotFetched { id: *id }),
        };
        // Another caller may have set it meanwhile: the first answer stays.
        let _ = cell.set(answer);
        cell.get().cloned().expect("the cell was just set")
    }

    /// The schema with this id if it is cached.
    pub fn cached(&self, id: &SchemaId) -> Option<Arc<Schema>> {
        self.cells
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .and_then(|cell| cell.get().and_then(|answer| answer.clone().ok()))
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
            .filter(|cell| matches!(cell.get(), Some(Ok(_))))
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

    fn cell(&self, id: &SchemaId) -> Arc<OnceCell<Answer>> {
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

    /// A schema the registry does not have stays poison for the container: a record decoded after
    /// the prefetch that met it is dead-lettered, never retried as "not fetched yet" (which would
    /// block its partition for good).
    #[tokio::test]
    async fn a_poison_answer_is_kept_for_later_decodes() {
        let source = Arc::new(Counting::default());
        let cache = SchemaCache::new(source.clone());
        let missing = SchemaId::Confluent(404);
        let err = cache.prefetch([missing]).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        let err = cache.get_now(&missing).unwrap_err();
        assert!(matches!(err, SchemaError::NotFound { .. }), "{err}");
        assert!(!cache.get(&missing).await.unwrap_err().is_transient());
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        assert!(cache.is_empty(), "only schemas count");
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
