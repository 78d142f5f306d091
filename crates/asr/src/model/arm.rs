//! ARM envelopes shared by every resource: the paged list ([`Page`]), the error body
//! ([`ArmErrorBody`]) and the Azure-AsyncOperation status body ([`OperationStatus`]).

use serde::{Deserialize, Serialize};

use super::{lenient_string, non_empty, null_default};

// ---------------------------------------------------------------------------------------------
// Paging
// ---------------------------------------------------------------------------------------------

/// One page of an ARM list response: `{"value": [...], "nextLink": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, bound(deserialize = "T: Deserialize<'de>"))]
pub struct Page<T> {
    /// The items on this page (`null` reads as empty).
    #[serde(deserialize_with = "null_default")]
    pub value: Vec<T>,
    /// Absolute URL of the next page, if any.
    pub next_link: Option<String>,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Self { value: Vec::new(), next_link: None }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and async operation status
// ---------------------------------------------------------------------------------------------

/// An ARM error response body: `{"error": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ArmErrorBody {
    /// The error.
    pub error: ArmErrorDetail,
}

/// An ARM error (ASR puts its own code and advice in `details`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ArmErrorDetail {
    /// Error code (named like `BadRequest` or numeric like `150261`).
    #[serde(deserialize_with = "lenient_string")]
    pub code: String,
    /// Message.
    #[serde(deserialize_with = "lenient_string")]
    pub message: String,
    /// ASR possible causes.
    pub possible_causes: Option<String>,
    /// ASR recommended action.
    pub recommended_action: Option<String>,
    /// Nested errors.
    #[serde(deserialize_with = "null_default")]
    pub details: Vec<ArmErrorDetail>,
}

impl ArmErrorDetail {
    /// The ASR code: the first detail's code if present, else the top-level code.
    pub fn asr_code(&self) -> &str {
        self.details.first().map(|d| d.code.as_str()).filter(|c| !c.is_empty()).unwrap_or(&self.code)
    }

    /// The first recommended action found in the details (depth first), else the top-level one.
    pub fn recommended_action(&self) -> Option<&str> {
        self.details.iter().find_map(|d| d.recommended_action()).or_else(|| non_empty(&self.recommended_action))
    }
}

impl std::fmt::Display for ArmErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(detail) = self.details.first() {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// The Azure-AsyncOperation status body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OperationStatus {
    /// Operation id.
    pub id: Option<String>,
    /// Operation name.
    pub name: Option<String>,
    /// `InProgress`, `Succeeded`, `Failed` or `Canceled`.
    pub status: Option<String>,
    /// Start time (raw).
    pub start_time: Option<String>,
    /// End time (raw).
    pub end_time: Option<String>,
    /// Error when failed.
    pub error: Option<ArmErrorDetail>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arm_error_helpers() {
        let body: ArmErrorBody = serde_json::from_value(json!({"error": {
            "code": "BadRequest", "message": "The operation has failed.",
            "details": [{"code": "SubscriptionIdNotRegisteredWithSrs", "message": "m",
                         "possibleCauses": "p", "recommendedAction": "r"}]
        }}))
        .expect("error body");
        assert_eq!(body.error.asr_code(), "SubscriptionIdNotRegisteredWithSrs");
        assert_eq!(body.error.recommended_action(), Some("r"));

        let numeric: ArmErrorBody = serde_json::from_value(
            json!({"error": {"code": 150261, "message": "Replication policy creation failed."}}),
        )
        .expect("numeric code");
        assert_eq!(numeric.error.asr_code(), "150261");
        assert_eq!(numeric.error.recommended_action(), None);
    }
}
