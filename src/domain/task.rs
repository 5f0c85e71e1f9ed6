//! The exception task list of the disconnect desk (SmartWorks' task manager): what people do
//! about an exception. switchyard raises an exception ([`ExceptionRecord`](super::ExceptionRecord))
//! once; a person then takes it on as a task (open, in progress, resolved), assigns it,
//! annotates it. The task is kept apart from the exception, which switchyard alone writes.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Where a person's work on an exception stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum TaskState {
    Open,
    InProgress,
    Resolved,
}

/// A note a person added to a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskNote {
    pub by: String,
    pub at: Timestamp,
    pub text: String,
}

/// A person's work on one exception. `version` rises at every change; a change is stored only
/// from the version it was made on (compare-and-set), so two people never overwrite each
/// other's assignment or notes unseen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionTask {
    pub exception_id: String,
    /// The exception's meter (empty for a service-level exception): where the task is stored.
    pub meter_id: String,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// A person's priority (1 most urgent .. 9), over the exception's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<TaskNote>,
    pub version: u64,
    pub updated_by: String,
    pub updated_at: Timestamp,
}
