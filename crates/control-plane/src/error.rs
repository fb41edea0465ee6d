//! Every error an API route can answer, and the one function that maps it to a status and body.

use nanofaas_api::{ErrorBody, ErrorCode, ValidationError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("function {0:?} already exists (use PUT /v1/functions/{0} to replace it)")]
    AlreadyExists(String),
    #[error(
        "idempotency key {key:?} was used with a different request (execution {execution_id})"
    )]
    IdempotencyConflict { key: String, execution_id: String },
    #[error("request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("{message}")]
    Backpressure {
        reason: &'static str,
        retry_after: Duration,
        message: String,
    },
    #[error("missing callback token (header x-callback-token)")]
    Unauthorized,
    #[error("callback token does not match this execution")]
    Forbidden,
    /// No valid API token (401 with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The token's role, or the request's origin, does not allow this (403).
    #[error("{0}")]
    Denied(String),
    /// A body that is not JSON (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A `Host` this server does not answer for (421).
    #[error("{0}")]
    MisdirectedRequest(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        ApiError::Invalid(ValidationError::new(field, reason))
    }

    /// HTTP status, extra headers and JSON body.
    pub fn parts(&self) -> (u16, Vec<(&'static str, String)>, ErrorBody) {
        let msg = self.to_string();
        let (status, code) = match self {
            ApiError::Invalid(_) | ApiError::BadRequest(_) => (400, ErrorCode::InvalidRequest),
            ApiError::NotFound(_) => (404, ErrorCode::NotFound),
            ApiError::AlreadyExists(_) => (409, ErrorCode::AlreadyExists),
            ApiError::IdempotencyConflict { .. } => (409, ErrorCode::IdempotencyConflict),
            ApiError::PayloadTooLarge { .. } => (413, ErrorCode::PayloadTooLarge),
            ApiError::Backpressure { .. } => (429, ErrorCode::Backpressure),
            ApiError::Unauthorized => (401, ErrorCode::Unauthorized),
            ApiError::Forbidden => (403, ErrorCode::Forbidden),
            ApiError::Unauthenticated(_) => (401, ErrorCode::Unauthorized),
            ApiError::Denied(_) => (403, ErrorCode::Forbidden),
            ApiError::UnsupportedMediaType(_) => (415, ErrorCode::UnsupportedMediaType),
            ApiError::MisdirectedRequest(_) => (421, ErrorCode::MisdirectedRequest),
            ApiError::MethodNotAllowed(_) => (405, ErrorCode::MethodNotAllowed),
            ApiError::ShuttingDown => (503, ErrorCode::ShuttingDown),
            ApiError::Internal(_) => (500, ErrorCode::Internal),
        };
        let mut headers = Vec::new();
        if let ApiError::Unauthenticated(why) = self {
            headers.push((
                "www-authenticate",
                if why.contains("not valid") {
                    "Bearer error=\"invalid_token\"".to_string()
                } else {
                    "Bearer".to_string()
                },
            ));
        }
        if let ApiError::Backpressure {
            reason,
            retry_after,
            ..
        } = self
        {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            headers.push(("retry-after", secs.to_string()));
            headers.push((
                nanofaas_api::headers::QUEUE_REJECT_REASON,
                reason.to_string(),
            ));
        }
        (status, headers, ErrorBody::new(code, msg))
    }
}
