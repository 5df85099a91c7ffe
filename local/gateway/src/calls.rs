//! Which IAM actions each hosted function used: every AWS request reaching the gateway is noted
//! under the function that sent it (its SDK's `app/<name>` User-Agent token, from the
//! `AWS_SDK_UA_APP_ID` the gateway gives each function) and the IAM action it needs. Served at
//! `GET /_local/calls` so tests can hold the calls against the roles in `infra/template.yaml`:
//! the local stack enforces no IAM, this is how a missing permission still fails a test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use axum::http::HeaderMap;

/// The actions seen, by function.
#[derive(Default)]
pub struct Calls {
    seen: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl Calls {
    /// Notes a request; requests from outside the hosted functions (tests, tools) are skipped.
    pub fn record(&self, headers: &HeaderMap, body: &[u8]) {
        let Some(function) = app_id(headers) else {
            return;
        };
        let actions = actions(headers, body);
        if actions.is_empty() {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.entry(function).or_default().extend(actions);
    }

    /// Everything seen so far as `{"<function>": ["<service>:<Action>", ...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!(*seen)
    }
}

/// Whether this request's body is needed to name its actions (only DynamoDB transactions name
/// theirs inside the body).
pub fn needs_body(headers: &HeaderMap) -> bool {
    header(headers, "x-amz-target").is_some_and(|t| t.ends_with(".TransactWriteItems"))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `app/<id>` token of the SDK's User-Agent.
fn app_id(headers: &HeaderMap) -> Option<String> {
    ["x-amz-user-agent", "user-agent"]
        .iter()
        .filter_map(|h| header(headers, h))
        .flat_map(str::split_whitespace)
        .find_map(|token| token.strip_prefix("app/"))
        .map(str::to_string)
}

/// Region and service of the SigV4 credential scope
/// (`Credential=<key>/<date>/<region>/<service>/aws4_request`).
pub fn credential_scope(headers: &HeaderMap) -> Option<(String, String)> {
    let auth = header(headers, "authorization")?;
    let credential = auth.split("Credential=").nth(1)?.split(',').next()?;
    let parts: Vec<&str> = credential.split('/').collect();
    (parts.len() == 5).then(|| (parts[2].to_string(), parts[3].to_string()))
}

/// The IAM service prefix: the credential scope's service.
fn service(headers: &HeaderMap) -> Option<String> {
    credential_scope(headers).map(|(_, service)| service)
}

/// The IAM actions a request needs: `X-Amz-Target`'s operation (a DynamoDB transaction needs
/// the action of each item instead), or a Query-protocol form's `Action`.
fn actions(headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let Some(service) = service(headers) else {
        return Vec::new();
    };
    if let Some(target) = header(headers, "x-amz-target") {
        let operation = target.rsplit('.').next().unwrap_or(target);
        if operation == "TransactWriteItems" {
            return transaction_actions(&service, body);
        }
        return vec![format!("{service}:{operation}")];
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "Action")
        .map(|(_, v)| vec![format!("{service}:{v}")])
        .unwrap_or_default()
}

/// `TransactWriteItems` is authorised per item: `Put` → `PutItem`, `Update` → `UpdateItem`,
/// `Delete` → `DeleteItem`, `ConditionCheck` → `ConditionCheckItem`.
fn transaction_actions(service: &str, body: &[u8]) -> Vec<String> {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut out = BTreeSet::new();
    for item in parsed["TransactItems"].as_array().into_iter().flatten() {
        for kind in item.as_object().into_iter().flat_map(|o| o.keys()) {
            out.insert(format!("{service}:{kind}Item"));
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const SCOPE: &str = "AWS4-HMAC-SHA256 Credential=testing/20261123/us-east-1/";

    #[test]
    fn notes_json_query_and_transaction_calls_by_function() {
        let calls = Calls::default();
        let ua = "aws-sdk-rust/1.3 os/linux lang/rust/1.90 app/bootstrap";
        let ddb = format!("{SCOPE}dynamodb/aws4_request, SignedHeaders=host, Signature=x");
        let ec2 = format!("{SCOPE}ec2/aws4_request, SignedHeaders=host, Signature=x");
        calls.record(
            &headers(&[
                ("x-amz-user-agent", ua),
                ("authorization", &ddb),
                ("x-amz-target", "DynamoDB_20120810.GetItem"),
            ]),
            b"{}",
        );
        let tx = headers(&[
            ("x-amz-user-agent", ua),
            ("authorization", &ddb),
            ("x-amz-target", "DynamoDB_20120810.TransactWriteItems"),
        ]);
        assert!(needs_body(&tx));
        calls.record(
            &tx,
            br#"{"TransactItems":[{"Put":{}},{"Delete":{}},{"Put":{}}]}"#,
        );
        calls.record(
            &headers(&[("user-agent", ua), ("authorization", &ec2)]),
            b"Version=2016-11-15&Action=DescribeInstances&Filter.1.Name=tag",
        );
        // A test's own client: no app id, not noted.
        calls.record(
            &headers(&[("authorization", &ec2)]),
            b"Action=TerminateInstances",
        );
        assert_eq!(
            calls.to_json(),
            serde_json::json!({"bootstrap": [
                "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "ec2:DescribeInstances"
            ]})
        );
    }
}
