//! Checks of `deploy/kubernetes/` (the manifests that run nanofaas itself in a cluster). The
//! crate has no code of its own: its test, `tests/manifests.rs`, does the work.
//!
//! - Every YAML document of every file listed in `kustomization.yaml` is deserialized into its
//!   typed `k8s-openapi` object (`Deployment`, `Service`, `Role`, ...) **strictly**: the types
//!   ignore unknown fields, so the document is also serialized back and must equal what was
//!   read. A misspelt or misplaced field, or a value of the wrong shape, fails with its path.
//! - The invariants the deployment relies on: the Role's verbs are exactly what the kubernetes
//!   provider calls, the control plane runs as non-root with a read-only root filesystem and
//!   probes on its real health routes, the NetworkPolicy selects the pods the provider labels,
//!   the Service and the probes name real ports, the configuration selects the provider.
//!
//! `cargo nextest run -p nanofaas-deploy-check` (no cluster, no Docker).
