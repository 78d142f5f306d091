//! Typed KV access with compare-and-set. Values are protobuf messages.
//!
//! Every write that decides ownership goes through [`TypedKv::create`] (create-if-absent) or
//! [`TypedKv::update`] (only if the key is still at the revision the caller read), so two
//! processes racing for the same key get exactly one winner and one typed conflict.

use std::marker::PhantomData;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use futures::TryStreamExt;
use prost::Message;

/// A KV revision (the bucket stream's sequence of the write).
pub type Revision = u64;

/// A value together with the revision it was read at.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<M> {
    /// The decoded value.
    pub value: M,
    /// Pass this to [`TypedKv::update`] to write only if nobody wrote in between.
    pub revision: Revision,
}

/// What can go wrong with a KV operation.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// `create` found the key already there.
    #[error("key {key:?} already exists in bucket {bucket}")]
    AlreadyExists {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// `update` found the key at another revision than the one expected: someone else wrote it.
    #[error("key {key:?} in bucket {bucket} is no longer at revision {expected}: it was changed concurrently")]
    Conflict {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
    },
    /// The stored bytes are not a valid message of the expected type.
    #[error("key {key:?} in bucket {bucket} holds an undecodable value: {source}")]
    Corrupt {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Why decoding failed.
        source: prost::DecodeError,
    },
    /// NATS failed (timeout, connection, server error).
    #[error("kv {op} of {key:?} in bucket {bucket} failed: {source}")]
    Nats {
        /// Which operation.
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The underlying error.
        source: async_nats::Error,
    },
}

/// A KV bucket whose values are messages of type `M`.
#[derive(Debug)]
pub struct TypedKv<M> {
    store: kv::Store,
    bucket: String,
    _value: PhantomData<fn() -> M>,
}

impl<M> Clone for TypedKv<M> {
    fn clone(&self) -> Self {
        Self { store: self.store.clone(), bucket: self.bucket.clone(), _value: PhantomData }
    }
}

impl<M: Message + Default> TypedKv<M> {
    pub(crate) fn new(store: kv::Store, bucket: &str) -> Self {
        Self { store, bucket: bucket.to_owned(), _value: PhantomData }
    }

    fn nats(&self, op: &'static str, key: &str, source: impl Into<async_nats::Error>) -> KvError {
        KvError::Nats { op, bucket: self.bucket.clone(), key: key.to_owned(), source: source.into() }
    }

    /// Reads a key; `None` if it does not exist (or was deleted).
    pub async fn get(&self, key: &str) -> Result<Option<Versioned<M>>, KvError> {
        let entry = self.store.entry(key).await.map_err(|e| self.nats("get", key, e))?;
        let Some(entry) = entry else { return Ok(None) };
        if !matches!(entry.operation, kv::Operation::Put) {
            return Ok(None);
        }
        let value = M::decode(entry.value.as_ref()).map_err(|source| KvError::Corrupt {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            source,
        })?;
        Ok(Some(Versioned { value, revision: entry.revision }))
    }

    /// Writes `value` only if `key` does not exist yet. Returns the new revision.
    pub async fn create(&self, key: &str, value: &M) -> Result<Revision, KvError> {
        match self.store.create(key, value.encode_to_vec().into()).await {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                Err(KvError::AlreadyExists { bucket: self.bucket.clone(), key: key.to_owned() })
            }
            Err(e) => Err(self.nats("create", key, e)),
        }
    }

    /// Writes `value` only if `key` is still at `expected`. Returns the new revision.
    pub async fn update(&self, key: &str, value: &M, expected: Revision) -> Result<Revision, KvError> {
        match self.store.update(key, value.encode_to_vec().into(), expected).await {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                Err(KvError::Conflict { bucket: self.bucket.clone(), key: key.to_owned(), expected })
            }
            Err(e) => Err(self.nats("update", key, e)),
        }
    }

    /// Writes `value` unconditionally. Only for keys a single writer owns.
    pub async fn put(&self, key: &str, value: &M) -> Result<Revision, KvError> {
        self.store.put(key, value.encode_to_vec().into()).await.map_err(|e| self.nats("put", key, e))
    }

    /// Deletes `key` (a later `create` of the same key succeeds).
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store.delete(key).await.map_err(|e| self.nats("delete", key, e))
    }

    /// Every live key in the bucket.
    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        let keys = self.store.keys().await.map_err(|e| self.nats("keys", "*", e))?;
        keys.try_collect().await.map_err(|e| self.nats("keys", "*", e))
    }
}
