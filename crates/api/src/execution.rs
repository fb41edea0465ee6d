//! Execution status and the JSON view of an execution.

use crate::error::ErrorBody;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    Queued,
    Running,
    Success,
    Error,
    Timeout,
}

impl ExecutionStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Error | Self::Timeout)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Success => "success",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

/// `GET /v1/executions/{id}`. Timestamps are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionView {
    pub execution_id: String,
    pub function: String,
    pub status: ExecutionStatus,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<ErrorBody>,
    pub attempts: u32,
    pub cold_start: bool,
    #[serde(default)]
    pub init_duration_ms: Option<u64>,
    pub created_at: u64,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub trace_id: Option<String>,
    /// `sync` or `async`.
    pub mode: String,
    /// Whether the execution was run again after a restart of the control plane (its attempts
    /// then count the runs before the restart too).
    #[serde(default)]
    pub resumed: bool,
    /// How the last attempt got its instance: `warm`, `cold` or `start_failed`; absent before
    /// the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
}
