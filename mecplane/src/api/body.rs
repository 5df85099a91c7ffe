//! Decoding the `POST /clusters` body into a [`ClusterRequest`] (and the `PATCH /clusters/{id}`
//! body into a [`ClusterPatch`]) so that every rejection says what
//! is wrong and where: text that is not JSON is `400 MalformedJson`; JSON of the wrong shape — not
//! an object, an unknown field, a value of the wrong type — is `422 ValidationError` naming the
//! field (`workers`, `tags.env`, `addons[1]`). serde's own messages name an unknown field but not
//! the field whose value has the wrong type, so the body is read as a JSON value first and a bad
//! field is found by decoding the fields one at a time.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::spec::ClusterRequest;

use super::errors::{codes, ApiError};
use super::updates::ClusterPatch;

/// Reads the body of a create request.
pub fn decode_create(body: &[u8]) -> Result<ClusterRequest, ApiError> {
    decode(body, &known_fields(), r#"{"name": "edge-1"}"#)
}

/// Reads the body of a `PATCH /clusters/{id}` request.
pub fn decode_patch(body: &[u8]) -> Result<ClusterPatch, ApiError> {
    let known: Vec<String> = ClusterPatch::FIELDS.iter().map(|f| f.to_string()).collect();
    decode(body, &known, r#"{"workers": 3}"#)
}

/// The body of `POST /reconcile` (`{"dry_run": true}`); an empty body is `{}`.
pub fn decode_reconcile(body: &[u8]) -> Result<crate::reconcile::ReconcileRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    decode(body, &["dry_run".to_string()], r#"{"dry_run": true}"#)
}

/// Reads a JSON object whose fields must be among `known` into `T`, naming the field at fault.
fn decode<T: DeserializeOwned>(
    body: &[u8],
    known: &[String],
    example: &str,
) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        if body.iter().all(u8::is_ascii_whitespace) {
            ApiError::malformed_json(format!(
                "the body is empty: send a JSON object such as {example}"
            ))
        } else {
            ApiError::malformed_json(format!("the body is not valid JSON: {e}"))
        }
    })?;
    let Value::Object(fields) = value else {
        return Err(ApiError::unprocessable(
            codes::VALIDATION,
            "the body must be a JSON object",
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| !known.contains(k)) {
        return Err(ApiError::invalid(
            unknown.clone(),
            format!("unknown field; expected one of {}", known.join(", ")),
        ));
    }
    serde_json::from_value(Value::Object(fields.clone()))
        .map_err(|whole| field_error::<T>(&fields, whole))
}

/// The fields a request may carry, as serde spells them: every field of the default request
/// serializes (as `null`), so the list cannot drift from the struct.
fn known_fields() -> Vec<String> {
    let mut known: Vec<String> = match serde_json::to_value(ClusterRequest::default()) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    known.extend(
        ClusterRequest::OMITTED_WHEN_UNSET
            .iter()
            .map(|f| f.to_string()),
    );
    known
}

/// Finds the field whose value made decoding fail, down to the element of a list or map.
fn field_error<T: DeserializeOwned>(
    fields: &Map<String, Value>,
    whole: serde_json::Error,
) -> ApiError {
    for (key, value) in fields {
        let single = Value::Object(Map::from_iter([(key.clone(), value.clone())]));
        let Err(e) = serde_json::from_value::<T>(single) else {
            continue;
        };
        let path = match value {
            Value::Array(items) => items
                .iter()
                .position(|v| !v.is_string())
                .map(|i| format!("{key}[{i}]")),
            Value::Object(map) => map
                .iter()
                .find(|(_, v)| !v.is_string())
                .map(|(k, _)| format!("{key}.{k}")),
            _ => None,
        };
        return ApiError::invalid(path.unwrap_or_else(|| key.clone()), e.to_string());
    }
    ApiError::unprocessable(codes::VALIDATION, whole.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(body: &str) -> ApiError {
        decode_create(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn well_formed_requests_decode() {
        let r = decode_create(
            br#"{"name": "edge", "workers": 2, "tags": {"env": "dev"}, "subnet_id": null}"#,
        )
        .unwrap();
        assert_eq!(r.workers, Some(2));
        assert_eq!(r.subnet_id, None);
        // Fields left out of the JSON when unset are still fields a request may carry.
        let r = decode_create(
            br#"{"name": "edge", "allow_api_from_anywhere": true, "api_allowed_cidrs": ["0.0.0.0/0"],
                 "exposed_ports": [{"port": 443, "cidrs": ["203.0.113.0/24"]}]}"#,
        )
        .unwrap();
        assert_eq!(r.allow_api_from_anywhere, Some(true));
        assert_eq!(r.exposed_ports.map(|p| p.len()), Some(1));
        let e = rejected(r#"{"name": "edge", "exposed_ports": [{"port": 443, "cidr": []}]}"#);
        assert_eq!(e.field.as_deref(), Some("exposed_ports[0]"), "{e:?}");
    }

    #[test]
    fn text_that_is_not_json_is_400() {
        for body in [
            "",
            "  ",
            "{",
            "{\"name\": }",
            "nope",
            "{\"name\": \"a\"} trailing",
        ] {
            let e = rejected(body);
            assert_eq!((e.status, e.code), (400, codes::MALFORMED_JSON), "{body:?}");
        }
    }

    #[test]
    fn wrong_shapes_are_422_naming_the_field() {
        let field = |body: &str| {
            let e = rejected(body);
            assert_eq!(e.status, 422, "{body}");
            e.field
        };
        assert_eq!(field(r#"[1, 2]"#), None);
        assert_eq!(field(r#""edge""#), None);
        assert_eq!(
            field(r#"{"name": "a", "wrokers": 2}"#).as_deref(),
            Some("wrokers")
        );
        assert_eq!(
            field(r#"{"name": "a", "workers": "two"}"#).as_deref(),
            Some("workers")
        );
        assert_eq!(
            field(r#"{"name": "a", "workers": -1}"#).as_deref(),
            Some("workers")
        );
        assert_eq!(
            field(r#"{"name": "a", "workers": 1.5}"#).as_deref(),
            Some("workers")
        );
        assert_eq!(
            field(r#"{"name": "a", "workers": 99999999999}"#).as_deref(),
            Some("workers")
        );
        assert_eq!(field(r#"{"name": 7}"#).as_deref(), Some("name"));
        assert_eq!(
            field(r#"{"name": "a", "addons": ["dns", 3]}"#).as_deref(),
            Some("addons[1]")
        );
        assert_eq!(
            field(r#"{"name": "a", "addons": "dns"}"#).as_deref(),
            Some("addons")
        );
        assert_eq!(
            field(r#"{"name": "a", "tags": {"env": 1}}"#).as_deref(),
            Some("tags.env")
        );
        assert_eq!(
            field(r#"{"name": "a", "retain_on_failure": "yes"}"#).as_deref(),
            Some("retain_on_failure")
        );
    }
}
