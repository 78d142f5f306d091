//! Errors of the Azure client, typed and classified so callers know whether to retry.

use std::time::Duration;

/// What a caller can do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: the same request can succeed later (5xx, timeouts, connection errors).
    Retryable,
    /// ARM throttled the request; retry after the given time.
    Throttled,
    /// The resource is not in a state that allows this now (another operation runs, wrong
    /// state): retry only after the state changes.
    PreconditionFailed,
    /// The resource does not exist.
    NotFound,
    /// Credentials or permissions: a human must act.
    Unauthorized,
    /// The request or the operation cannot succeed as it is (bad input, quota, ASR job failure).
    Permanent,
}

/// An error from Azure (or the simulator), with ASR's details when it gave them.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    /// Azure answered with an error status.
    #[error("{operation}: HTTP {status} {code}: {message}")]
    Api {
        /// What was attempted, e.g. `POST unplannedFailover vm-00001`.
        operation: String,
        /// HTTP status.
        status: u16,
        /// ASR/ARM error code (the most specific one found).
        code: String,
        /// Message.
        message: String,
        /// ASR's possible causes.
        possible_causes: Option<String>,
        /// ASR's recommended action.
        recommended_action: Option<String>,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// No answer: connection failed, reset or timed out. For a mutation the outcome is unknown.
    #[error("{operation}: no answer from Azure ({message})")]
    Transport {
        /// What was attempted.
        operation: String,
        /// Why.
        message: String,
        /// It was a timeout.
        timed_out: bool,
    },
    /// A token could not be obtained.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// Azure answered something the client does not understand.
    #[error("{operation}: unexpected response: {message}")]
    Decode {
        /// What was attempted.
        operation: String,
        /// Why.
        message: String,
    },
    /// An ASR job ended in failure.
    #[error("job {job} failed: {code}: {message}")]
    JobFailed {
        /// Job name.
        job: String,
        /// ASR error code.
        code: String,
        /// Message.
        message: String,
        /// Possible causes.
        possible_causes: Option<String>,
        /// Recommended action.
        recommended_action: Option<String>,
    },
    /// The caller asked for something that cannot be sent (names the field).
    #[error("invalid request: {0}")]
    InvalidInput(String),
    /// The sender's [`crate::http::SendGuard`] stopped a side effect right before it went out:
    /// nothing was sent.
    #[error("{operation}: not sent: {reason}")]
    NotSent {
        /// What was about to be sent.
        operation: String,
        /// Why not.
        reason: String,
    },
}

impl AsrError {
    /// How a caller should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            AsrError::Api { status, code, .. } => match *status {
                429 => ErrorClass::Throttled,
                401 | 403 => ErrorClass::Unauthorized,
                404 => ErrorClass::NotFound,
                409 => ErrorClass::PreconditionFailed,
                408 | 500..=599 => ErrorClass::Retryable,
                // ASR answers a missing fabric with 400 SubscriptionIdNotRegisteredWithSrs.
                400 if code == "SubscriptionIdNotRegisteredWithSrs" => ErrorClass::NotFound,
                400 if code == "OperationNotAllowedInCurrentState" || code == "AnotherOperationInProgress" => {
                    ErrorClass::PreconditionFailed
                }
                _ => ErrorClass::Permanent,
            },
            // Nothing went out: whoever may still send can try again.
            AsrError::Transport { .. } | AsrError::NotSent { .. } => ErrorClass::Retryable,
            AsrError::Auth(_) => ErrorClass::Unauthorized,
            AsrError::Decode { .. } | AsrError::JobFailed { .. } | AsrError::InvalidInput(_) => ErrorClass::Permanent,
        }
    }

    /// Whether running the same thing again may succeed without a human.
    pub fn is_retryable(&self) -> bool {
        matches!(self.class(), ErrorClass::Retryable | ErrorClass::Throttled | ErrorClass::PreconditionFailed)
    }

    /// For a mutation: the request may or may not have been applied (no answer, or a 5xx).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            AsrError::Transport { .. } => true,
            AsrError::Api { status, .. } => *status >= 500 || *status == 408,
            _ => false,
        }
    }

    /// The ASR error code, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            AsrError::Api { code, .. } | AsrError::JobFailed { code, .. } => Some(code),
            _ => None,
        }
    }

    /// ASR's recommended action, if any.
    pub fn recommended_action(&self) -> Option<&str> {
        match self {
            AsrError::Api { recommended_action, .. } | AsrError::JobFailed { recommended_action, .. } => {
                recommended_action.as_deref()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> AsrError {
        AsrError::Api {
            operation: "op".into(),
            status,
            code: code.into(),
            message: "m".into(),
            possible_causes: None,
            recommended_action: None,
            retry_after: None,
        }
    }

    #[test]
    fn errors_are_classified_for_the_caller() {
        assert_eq!(api(429, "SubscriptionRequestsThrottled").class(), ErrorClass::Throttled);
        assert_eq!(api(503, "x").class(), ErrorClass::Retryable);
        assert!(api(503, "x").is_ambiguous());
        assert_eq!(api(409, "AnotherOperationInProgress").class(), ErrorClass::PreconditionFailed);
        assert_eq!(api(400, "OperationNotAllowedInCurrentState").class(), ErrorClass::PreconditionFailed);
        assert_eq!(api(400, "SubscriptionIdNotRegisteredWithSrs").class(), ErrorClass::NotFound);
        assert_eq!(api(400, "InvalidParameter").class(), ErrorClass::Permanent);
        assert_eq!(api(403, "AuthorizationFailed").class(), ErrorClass::Unauthorized);
        assert!(!api(400, "InvalidParameter").is_ambiguous());
        let t = AsrError::Transport { operation: "o".into(), message: "timed out".into(), timed_out: true };
        assert!(t.is_ambiguous() && t.is_retryable());
    }
}
