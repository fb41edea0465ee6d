//! The registry of functions: name → the live [`Function`] (validated spec, its admission, its
//! backend, its metrics). Replacing or removing a function swaps the entry under a short write
//! lock and hands the old one back so the caller can drain and stop it outside the lock.

use crate::admission::Admission;
use crate::dispatch::Backend;
use crate::metrics::FunctionMetrics;
use crate::ratelimit::TokenBucket;
use nanofaas_api::FunctionSpec;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A registered function and everything that serves it.
pub struct Function {
    pub name: Arc<str>,
    pub spec: Arc<FunctionSpec>,
    pub admission: Arc<Admission>,
    pub backend: Arc<dyn Backend>,
    pub metrics: Arc<FunctionMetrics>,
    pub rate: Option<TokenBucket>,
}

#[derive(Default)]
pub struct Registry {
    map: RwLock<HashMap<Arc<str>, Arc<Function>>>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<Function>> {
        self.map.read().unwrap().get(name).cloned()
    }

    /// Every function, sorted by name.
    pub fn list(&self) -> Vec<Arc<Function>> {
        let mut v: Vec<_> = self.map.read().unwrap().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Adds `f` unless the name is taken; gives it back if it is.
    pub fn insert_new(&self, f: Arc<Function>) -> Result<(), Arc<Function>> {
        let mut map = self.map.write().unwrap();
        if map.contains_key(&f.name) {
            return Err(f);
        }
        map.insert(f.name.clone(), f);
        Ok(())
    }

    /// Adds or replaces; returns the replaced function.
    pub fn upsert(&self, f: Arc<Function>) -> Option<Arc<Function>> {
        self.map.write().unwrap().insert(f.name.clone(), f)
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Function>> {
        self.map.write().unwrap().remove(name)
    }

    /// Removes every function (shutdown).
    pub fn drain(&self) -> Vec<Arc<Function>> {
        self.map.write().unwrap().drain().map(|(_, f)| f).collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
