//! Idempotency keys for `POST /clusters`: the `Idempotency-Key` header (as in the IETF
//! httpapi draft) or the body's `client_token` (as EKS's `clientRequestToken`). A key binds to the
//! first request's cluster id and a hash of that request; a retry with the same key and the same
//! request gets the first answer, the same key with a different request is refused. Keys belong
//! to the IAM principal that signed the request: another caller's key of the same text is another
//! key.

use crate::spec::ClusterRequest;

use super::errors::ApiError;
use super::ApiRequest;

/// The request header carrying a key.
pub const HEADER: &str = "Idempotency-Key";
/// The body field carrying a key.
pub const BODY_FIELD: &str = "client_token";
/// Longest key (the same rule as `client_token`'s validation).
pub const MAX_KEY_LEN: usize = 64;

/// A key and where it came from (the field named when the key is at fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub field: &'static str,
}

impl IdempotencyKey {
    /// The key as stored: the caller's principal, then the key (the key alone when the caller
    /// is unknown).
    pub fn scoped(&self, caller: Option<&str>) -> String {
        match caller {
            Some(principal) => format!("{principal}#{}", self.key),
            None => self.key.clone(),
        }
    }
}

/// The request's key, if it carries one. Both places may carry one only if they agree.
pub fn key_of(req: &ApiRequest, body: &ClusterRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let header = req.header(HEADER);
    if let Some(value) = header {
        if value.is_empty()
            || value.len() > MAX_KEY_LEN
            || !value.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ApiError::invalid(
                HEADER,
                format!("must be 1 to {MAX_KEY_LEN} printable characters"),
            ));
        }
    }
    match (header, &body.client_token) {
        (Some(h), Some(t)) if h != t => Err(ApiError::invalid(
            BODY_FIELD,
            format!("differs from the {HEADER} header"),
        )),
        (Some(h), _) => Ok(Some(IdempotencyKey {
            key: h.to_string(),
            field: HEADER,
        })),
        // The token's shape is checked with the rest of the body.
        (None, Some(t)) => Ok(Some(IdempotencyKey {
            key: t.clone(),
            field: BODY_FIELD,
        })),
        (None, None) => Ok(None),
    }
}

/// A stable hash of what was asked for: the request as written, without its token (a retry may
/// move the key between header and body), in serde's field order with sorted tags — so two
/// bodies that differ only in spacing or key order hash the same.
pub fn request_hash(body: &ClusterRequest) -> String {
    let canonical = serde_json::to_string(&ClusterRequest {
        client_token: None,
        ..body.clone()
    })
    .unwrap_or_default();
    // FNV-1a, 64 bit: stable across releases (std's hasher is not) and dependency-free. A
    // collision would only let a different request replay the first answer under the same key.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("fnv1a64:{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> ApiRequest {
        ApiRequest {
            method: "POST".into(),
            path: "/clusters".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn body(token: Option<&str>) -> ClusterRequest {
        ClusterRequest {
            name: Some("edge".into()),
            client_token: token.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn key_from_header_or_body() {
        assert_eq!(key_of(&req(&[]), &body(None)), Ok(None));
        let k = key_of(&req(&[("idempotency-key", "k1")]), &body(None))
            .unwrap()
            .unwrap();
        assert_eq!((k.key.as_str(), k.field), ("k1", HEADER));
        let k = key_of(&req(&[]), &body(Some("t1"))).unwrap().unwrap();
        assert_eq!((k.key.as_str(), k.field), ("t1", BODY_FIELD));
        assert!(key_of(&req(&[("Idempotency-Key", "same")]), &body(Some("same"))).is_ok());
        let e = key_of(&req(&[("Idempotency-Key", "a")]), &body(Some("b"))).unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (422, Some(BODY_FIELD)));
        for bad in ["", "has space", &"k".repeat(65)] {
            let e = key_of(&req(&[("Idempotency-Key", bad)]), &body(None)).unwrap_err();
            assert_eq!(
                (e.status, e.field.as_deref()),
                (422, Some(HEADER)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hash_ignores_the_token_and_sees_every_field() {
        assert_eq!(request_hash(&body(Some("a"))), request_hash(&body(None)));
        let more = ClusterRequest {
            workers: Some(2),
            ..body(None)
        };
        assert_ne!(request_hash(&more), request_hash(&body(None)));
    }
}
