//! Idempotency keys: the same key for the same function returns the same execution for as long
//! as that execution's record is kept (TTL and caps of the execution store); the same key with a
//! different request body is a conflict.
//!
//! The check and the claim happen under one lock, so racing duplicates agree on one execution.

use crate::executions::{Execution, ExecutionStore};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Key = (Arc<str>, String);

struct Entry {
    execution_id: Arc<str>,
    digest: [u8; 32],
}

#[derive(Default)]
pub struct Idempotency {
    map: Mutex<HashMap<Key, Entry>>,
}

pub enum Claim {
    /// The key is now bound to the new execution.
    New,
    /// The key is bound to this earlier execution, with the same request.
    Existing(Arc<Execution>),
    /// The key is bound to an earlier execution with a different request.
    Conflict(Arc<str>),
}

/// Digest of a request body, insensitive to white space and key order: two requests that mean
/// the same JSON are the same request.
pub fn digest(body: &[u8]) -> [u8; 32] {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => Sha256::digest(v.to_string().as_bytes()).into(),
        Err(_) => Sha256::digest(body).into(),
    }
}

impl Idempotency {
    /// Binds `key` to `exec` unless it is bound to a live execution already.
    pub fn claim(
        &self,
        function: &Arc<str>,
        key: &str,
        body_digest: [u8; 32],
        exec: &Arc<Execution>,
        store: &ExecutionStore,
    ) -> Claim {
        let mut map = self.map.lock().unwrap();
        let k = (function.clone(), key.to_string());
        if let Some(e) = map.get(&k) {
            if let Some(existing) = store.get(&e.execution_id) {
                return if e.digest == body_digest {
                    Claim::Existing(existing)
                } else {
                    Claim::Conflict(e.execution_id.clone())
                };
            }
        }
        map.insert(
            k,
            Entry {
                execution_id: exec.id.clone(),
                digest: body_digest,
            },
        );
        Claim::New
    }

    /// Drops keys whose execution record is gone.
    pub fn sweep(&self, store: &ExecutionStore) {
        self.map
            .lock()
            .unwrap()
            .retain(|_, e| store.get(&e.execution_id).is_some());
    }

    /// Forgets the keys of a deleted function.
    pub fn forget_function(&self, function: &str) {
        self.map
            .lock()
            .unwrap()
            .retain(|(f, _), _| &**f != function);
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn digest_ignores_formatting() {
        assert_eq!(
            super::digest(br#"{"input": 7, "metadata": {"a": "1"}}"#),
            super::digest(br#"{"metadata":{"a":"1"},"input":7}"#)
        );
        assert_ne!(
            super::digest(br#"{"input": 7}"#),
            super::digest(br#"{"input": 8}"#)
        );
    }
}
