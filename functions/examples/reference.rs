//! The reference Rust Lambda that `make bench` (local/bench.py) compares every mecplane handler
//! with: the least a Rust function that talks to DynamoDB can do. It is built with the same
//! release profile as `bootstrap` (`cargo build --release -p mecplane-functions --example
//! reference`) and run the same way, against the same local Runtime API and DynamoDB.
//!
//! At cold start it loads the SDK configuration from the environment (region, credentials,
//! `AWS_ENDPOINT_URL`, `AWS_MAX_ATTEMPTS`) and builds one DynamoDB client; each invocation makes
//! one consistent `GetItem` of a cluster record that does not exist in `MECPLANE_TABLE` and
//! answers `{"found": false}`. No tracing, no other client: whatever a handler spends beyond
//! this is what mecplane adds.

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::AttributeValue;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

/// A key in the table's shape (`pk`, `sk`) that no cluster has.
const MISSING_PK: &str = "CLUSTER#c-0000000000000000";

#[tokio::main]
async fn main() -> Result<(), Error> {
    let table = std::env::var("MECPLANE_TABLE").map_err(|_| "MECPLANE_TABLE is not set")?;
    let config = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let (client, table) = (&client, table.as_str());
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        let out = client
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(MISSING_PK.into()))
            .key("sk", AttributeValue::S("RECORD".into()))
            .consistent_read(true)
            .send()
            .await?;
        Ok::<_, Error>(json!({ "found": out.item().is_some() }))
    }))
    .await
}
