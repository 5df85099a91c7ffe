//! The route table and the router: which path templates exist, which methods each serves, and
//! which statuses each can answer. [`ROUTES`] is the one place these facts live — the router
//! reads it to answer `405` with the right `Allow`, and a test checks that `docs/openapi.yaml`
//! documents every entry.

use super::errors::ApiError;

/// One route: method, OpenAPI path template, and every status it can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    pub method: &'static str,
    pub path: &'static str,
    pub statuses: &'static [u16],
}

/// Every route the API serves.
pub const ROUTES: &[RouteInfo] = &[
    RouteInfo {
        method: "GET",
        path: "/healthz",
        statuses: &[200],
    },
    RouteInfo {
        method: "POST",
        path: "/clusters",
        statuses: &[202, 400, 409, 413, 422, 500, 503],
    },
    RouteInfo {
        method: "GET",
        path: "/clusters",
        statuses: &[200, 422, 500, 503],
    },
    RouteInfo {
        method: "GET",
        path: "/clusters/{id}",
        statuses: &[200, 404, 500, 503],
    },
    RouteInfo {
        method: "PATCH",
        path: "/clusters/{id}",
        statuses: &[200, 202, 400, 404, 409, 412, 413, 422, 500, 503],
    },
    RouteInfo {
        method: "DELETE",
        path: "/clusters/{id}",
        statuses: &[202, 404, 409, 500, 503],
    },
    RouteInfo {
        method: "GET",
        path: "/clusters/{id}/events",
        statuses: &[200, 404, 500, 503],
    },
    RouteInfo {
        method: "GET",
        path: "/clusters/{id}/kubeconfig",
        statuses: &[200, 404, 409, 500, 503],
    },
    RouteInfo {
        method: "GET",
        path: "/clusters/{id}/updates",
        statuses: &[200, 404, 500, 503],
    },
    RouteInfo {
        method: "GET",
        path: "/clusters/{id}/updates/{update_id}",
        statuses: &[200, 404, 500, 503],
    },
    RouteInfo {
        method: "POST",
        path: "/reconcile",
        statuses: &[200, 400, 403, 413, 422, 500, 503],
    },
    RouteInfo {
        method: "POST",
        path: "/clusters/{id}/nodes/{instance_id}/replace",
        statuses: &[202, 404, 409, 412, 422, 500, 503],
    },
];

/// A matched request: the operation and its path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    CreateCluster,
    ListClusters,
    /// `{id}` is a cluster id or a cluster name.
    GetCluster(String),
    PatchCluster(String),
    DeleteCluster(String),
    ClusterEvents(String),
    ClusterKubeconfig(String),
    ClusterUpdates(String),
    /// The cluster, then the update id.
    ClusterUpdate(String, String),
    /// The cluster and the node's instance id.
    ReplaceNode(String, String),
    Reconcile,
}

impl Route {
    /// The cluster id or name of a route on one cluster.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Route::GetCluster(id)
            | Route::PatchCluster(id)
            | Route::DeleteCluster(id)
            | Route::ClusterEvents(id)
            | Route::ClusterKubeconfig(id)
            | Route::ClusterUpdates(id)
            | Route::ClusterUpdate(id, _)
            | Route::ReplaceNode(id, _) => Some(id),
            Route::Healthz | Route::CreateCluster | Route::ListClusters | Route::Reconcile => None,
        }
    }

    /// The same route on the cluster `id`.
    pub fn with_cluster(self, id: String) -> Route {
        match self {
            Route::GetCluster(_) => Route::GetCluster(id),
            Route::PatchCluster(_) => Route::PatchCluster(id),
            Route::DeleteCluster(_) => Route::DeleteCluster(id),
            Route::ClusterEvents(_) => Route::ClusterEvents(id),
            Route::ClusterKubeconfig(_) => Route::ClusterKubeconfig(id),
            Route::ClusterUpdates(_) => Route::ClusterUpdates(id),
            Route::ClusterUpdate(_, update) => Route::ClusterUpdate(id, update),
            Route::ReplaceNode(_, node) => Route::ReplaceNode(id, node),
            other => other,
        }
    }
}

/// Matches a method and a (percent-encoded) path. An unknown path is `404`; a known path with a
/// method it does not serve is `405` with `Allow`.
pub fn route(method: &str, path: &str) -> Result<Route, ApiError> {
    let not_found = || ApiError::not_found(format!("no route {path}"));
    let trimmed = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let segments: Vec<&str> = trimmed
        .strip_prefix('/')
        .ok_or_else(not_found)?
        .split('/')
        .collect();
    let (template, id, update) = match segments.as_slice() {
        ["healthz"] => ("/healthz", None, None),
        ["clusters"] => ("/clusters", None, None),
        ["reconcile"] => ("/reconcile", None, None),
        ["clusters", id] => ("/clusters/{id}", Some(*id), None),
        ["clusters", id, "events"] => ("/clusters/{id}/events", Some(*id), None),
        ["clusters", id, "kubeconfig"] => ("/clusters/{id}/kubeconfig", Some(*id), None),
        ["clusters", id, "updates"] => ("/clusters/{id}/updates", Some(*id), None),
        ["clusters", id, "updates", update] => (
            "/clusters/{id}/updates/{update_id}",
            Some(*id),
            Some(*update),
        ),
        ["clusters", id, "nodes", node, "replace"] => (
            "/clusters/{id}/nodes/{instance_id}/replace",
            Some(*id),
            Some(*node),
        ),
        _ => return Err(not_found()),
    };
    let decode = |raw: Option<&str>| match raw {
        Some(raw) => percent_decode(raw)
            .filter(|s| !s.is_empty())
            .map(Some)
            .ok_or_else(not_found),
        None => Ok(None),
    };
    let id = decode(id)?;
    let update = decode(update)?.unwrap_or_default();
    let allowed: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.path == template)
        .map(|r| r.method)
        .collect();
    if !allowed.contains(&method) {
        return Err(ApiError::method_not_allowed(method, &allowed));
    }
    let id = id.unwrap_or_default();
    Ok(match (method, template) {
        ("GET", "/healthz") => Route::Healthz,
        ("POST", "/clusters") => Route::CreateCluster,
        ("GET", "/clusters") => Route::ListClusters,
        ("GET", "/clusters/{id}") => Route::GetCluster(id),
        ("PATCH", "/clusters/{id}") => Route::PatchCluster(id),
        ("DELETE", "/clusters/{id}") => Route::DeleteCluster(id),
        ("GET", "/clusters/{id}/events") => Route::ClusterEvents(id),
        ("GET", "/clusters/{id}/kubeconfig") => Route::ClusterKubeconfig(id),
        ("GET", "/clusters/{id}/updates") => Route::ClusterUpdates(id),
        ("GET", "/clusters/{id}/updates/{update_id}") => Route::ClusterUpdate(id, update),
        ("POST", "/clusters/{id}/nodes/{instance_id}/replace") => Route::ReplaceNode(id, update),
        ("POST", "/reconcile") => Route::Reconcile,
        // ROUTES and this match list the same pairs (a test checks it).
        _ => return Err(ApiError::internal()),
    })
}

/// Decodes `%XX` escapes in one path segment; `None` for a bad escape or invalid UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    // percent-encoding passes a malformed escape through as text; a path segment with one is
    // refused instead (so `%zz` never names a cluster).
    let bytes = segment.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_in_the_table_is_served() {
        for r in ROUTES {
            let path = r
                .path
                .replace("{id}", "c-0123456789abcdef")
                .replace("{update_id}", "u-0123456789abcdef")
                .replace("{instance_id}", "i-0123456789abcdef0");
            assert!(route(r.method, &path).is_ok(), "{} {}", r.method, r.path);
        }
    }

    #[test]
    fn paths_and_methods() {
        assert_eq!(
            route("GET", "/clusters/edge-1"),
            Ok(Route::GetCluster("edge-1".into()))
        );
        assert_eq!(route("GET", "/clusters/"), Ok(Route::ListClusters));
        assert_eq!(
            route("DELETE", "/clusters/a%2Db"),
            Ok(Route::DeleteCluster("a-b".into()))
        );
        assert_eq!(
            route("GET", "/clusters/c-1/kubeconfig"),
            Ok(Route::ClusterKubeconfig("c-1".into()))
        );
        assert_eq!(
            route("PATCH", "/clusters/edge-1"),
            Ok(Route::PatchCluster("edge-1".into()))
        );
        assert_eq!(
            route("GET", "/clusters/edge-1/updates/"),
            Ok(Route::ClusterUpdates("edge-1".into()))
        );
        assert_eq!(
            route("GET", "/clusters/edge-1/updates/u-1"),
            Ok(Route::ClusterUpdate("edge-1".into(), "u-1".into()))
        );
        assert_eq!(
            route("PATCH", "/clusters/c-1/updates/u-1")
                .unwrap_err()
                .headers,
            vec![("allow".to_string(), "GET".to_string())]
        );
        assert_eq!(
            route("GET", "/clusters/c-1/updates/%zz")
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(route("GET", "/nope").unwrap_err().status, 404);
        assert_eq!(route("GET", "/clusters//events").unwrap_err().status, 404);
        assert_eq!(route("GET", "/clusters/%zz").unwrap_err().status, 404);
        assert_eq!(route("GET", "").unwrap_err().status, 404);
        let e = route("PUT", "/clusters/x").unwrap_err();
        assert_eq!(e.status, 405);
        assert_eq!(
            e.headers,
            vec![("allow".to_string(), "GET, PATCH, DELETE".to_string())]
        );
        assert_eq!(
            route("DELETE", "/clusters").unwrap_err().headers[0].1,
            "POST, GET"
        );
    }
}
