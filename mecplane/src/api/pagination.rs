//! `GET /clusters`: the query (`max_results`, `next_token`, `status`, `region`), and paging over
//! the store. `DELETED` clusters are history: they are listed only when `status=DELETED` asks for
//! them. The store pages over every record, so a page is topped up from the following store pages
//! until it is full — each store page is used whole, so the token handed back always points just
//! past the last record the caller has seen.

use serde::Serialize;

use crate::error::CloudError;
use crate::ports::{ClusterStore, ListFilter};
use crate::record::{ClusterRecord, Status};

use super::errors::{codes, ApiError};

/// Page size when `max_results` is not given.
pub const DEFAULT_MAX_RESULTS: u32 = 20;
/// Largest `max_results`.
pub const MAX_MAX_RESULTS: u32 = 100;
/// Store pages read to fill one answer page, so a long run of deleted clusters cannot make one
/// request scan the whole table (the caller continues with `next_token`).
const STORE_PAGES_PER_ANSWER: usize = 5;

/// A parsed listing query.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub filter: ListFilter,
    pub next_token: Option<String>,
    pub max_results: u32,
}

/// The answer of `GET /clusters`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterList {
    pub clusters: Vec<ClusterRecord>,
    /// Pass back as `next_token` for the next page; `null` on the last page.
    pub next_token: Option<String>,
}

/// Reads the query string. Unknown parameters are ignored; a repeated one counts once (the first).
pub fn parse_query(query: &[(String, String)]) -> Result<ListQuery, ApiError> {
    let first = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let max_results = match first("max_results") {
        None => DEFAULT_MAX_RESULTS,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_MAX_RESULTS).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "max_results",
                    format!("must be an integer from 1 to {MAX_MAX_RESULTS}"),
                )
            })?,
    };
    let status = match first("status") {
        None => None,
        Some(v) => Some(Status::parse(v).ok_or_else(|| {
            let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid("status", format!("must be one of {}", all.join(", ")))
        })?),
    };
    let next_token = match first("next_token") {
        Some("") => return Err(invalid_token()),
        other => other.map(str::to_string),
    };
    let region = first("region").map(str::to_string);
    Ok(ListQuery {
        filter: ListFilter { status, region },
        next_token,
        max_results,
    })
}

fn invalid_token() -> ApiError {
    ApiError::unprocessable(
        codes::INVALID_TOKEN,
        "next_token is not a token this API handed out",
    )
    .with_field("next_token")
}

/// One page of clusters, newest first.
pub async fn list<S: ClusterStore>(store: &S, query: &ListQuery) -> Result<ClusterList, ApiError> {
    let show_deleted = query.filter.status == Some(Status::Deleted);
    let mut clusters = Vec::new();
    let mut token = query.next_token.clone();
    for _ in 0..STORE_PAGES_PER_ANSWER {
        let wanted = query.max_results - clusters.len() as u32;
        let page = match store.list(&query.filter, token.as_deref(), wanted).await {
            Ok(page) => page,
            // Only a token can make a listing malformed: the adapters reject a forged one.
            Err(CloudError::Rejected(_)) if token.is_some() => return Err(invalid_token()),
            Err(e) => return Err(e.into()),
        };
        clusters.extend(
            page.records
                .into_iter()
                .filter(|r| show_deleted || r.status != Status::Deleted),
        );
        token = page.next_token;
        if token.is_none() || clusters.len() as u32 >= query.max_results {
            break;
        }
    }
    Ok(ClusterList {
        clusters,
        next_token: token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<ListQuery, ApiError> {
        parse_query(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn defaults_and_bounds() {
        let d = q(&[]).unwrap();
        assert_eq!(
            (d.max_results, d.next_token, d.filter),
            (DEFAULT_MAX_RESULTS, None, ListFilter::default())
        );
        assert_eq!(q(&[("max_results", "100")]).unwrap().max_results, 100);
        for bad in ["0", "101", "-1", "ten", ""] {
            assert_eq!(
                q(&[("max_results", bad)]).unwrap_err().field.as_deref(),
                Some("max_results"),
                "{bad}"
            );
        }
    }

    #[test]
    fn filters_and_token() {
        let f = q(&[
            ("status", "ACTIVE"),
            ("region", "eu-west-1"),
            ("next_token", "abc"),
        ])
        .unwrap();
        assert_eq!(f.filter.status, Some(Status::Active));
        assert_eq!(f.filter.region.as_deref(), Some("eu-west-1"));
        assert_eq!(f.next_token.as_deref(), Some("abc"));
        assert_eq!(
            q(&[("status", "active")]).unwrap_err().field.as_deref(),
            Some("status")
        );
        let e = q(&[("next_token", "")]).unwrap_err();
        assert_eq!(
            (e.status, e.code, e.field.as_deref()),
            (422, codes::INVALID_TOKEN, Some("next_token"))
        );
    }
}
