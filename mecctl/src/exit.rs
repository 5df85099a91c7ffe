//! Failures as a script sees them: one error type whose exit code is stable (listed in
//! `mecctl --help`), and the mapping from an API answer to it.

use serde_json::Value;
use std::fmt;

/// A failure of a command: what to print on stderr and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

pub const API: i32 = 1;
/// Flags that do not go together (clap exits with the same code for the ones it checks).
pub const USAGE: i32 = 2;
pub const NOT_FOUND: i32 = 3;
pub const CONFLICT: i32 = 4;
pub const INVALID: i32 = 5;
pub const CLUSTER_FAILED: i32 = 6;
pub const TIMED_OUT: i32 = 7;
pub const INTERRUPTED: i32 = 130;

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// Any failure not caused by the API's answer (network, files, credentials).
    pub fn other(message: impl Into<String>) -> Self {
        Failure::new(API, message)
    }

    /// The failure an API error answer stands for: `{"error": {"code", "message", "field"}}`
    /// (or API Gateway's `{"message"}`).
    pub fn from_answer(status: u16, body: &Value) -> Self {
        let code = match status {
            404 => NOT_FOUND,
            409 | 412 => CONFLICT,
            400 | 413 | 422 => INVALID,
            _ => API,
        };
        let error = &body["error"];
        let message = match (error["message"].as_str(), error["field"].as_str()) {
            (Some(m), Some(field)) => format!("{field}: {m}"),
            (Some(m), None) => m.to_string(),
            _ => match body["message"].as_str() {
                Some(m) => m.to_string(),
                None => body.to_string(),
            },
        };
        let name = error["code"].as_str().unwrap_or("error");
        Failure::new(code, format!("{name} ({status}): {message}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_map_to_stable_codes_and_name_the_field() {
        let body = json!({"error": {"code": "ValidationError", "message": "must be between 0 and 50", "field": "workers"}});
        let f = Failure::from_answer(422, &body);
        assert_eq!(f.code, INVALID);
        assert_eq!(
            f.message,
            "ValidationError (422): workers: must be between 0 and 50"
        );
        let nf =
            json!({"error": {"code": "NotFound", "message": "no cluster with id or name 'x'"}});
        assert_eq!(Failure::from_answer(404, &nf).code, NOT_FOUND);
        assert_eq!(Failure::from_answer(409, &nf).code, CONFLICT);
        let gw = Failure::from_answer(403, &json!({"message": "Forbidden"}));
        assert_eq!(
            (gw.code, gw.message.as_str()),
            (API, "error (403): Forbidden")
        );
        assert_eq!(Failure::from_answer(503, &json!({})).code, API);
    }
}
