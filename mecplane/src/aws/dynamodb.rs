//! DynamoDB: the cluster records, name claims, events and idempotency keys ([`ClusterStore`]) in
//! one table, laid out as `docs/architecture.md` describes:
//!
//! | item | pk | sk |
//! |---|---|---|
//! | cluster record | `CLUSTER#<id>` | `RECORD` (+ `record`, `status`, `name`, `region`, `version`, `gsi1pk`, `gsi1sk`) |
//! | name claim | `NAME#<name>` | `CLAIM` (+ `cluster_id`) |
//! | event | `CLUSTER#<id>` | `EVENT#<time>#<random>` (+ `event`) |
//! | idempotency key | `IDEMPOTENCY#<key>` | `KEY` (+ `cluster_id`, `request_hash`) |
//!
//! Every write is conditional. The record's `version` attribute is the one the conditions test;
//! the JSON in `record` carries the same number.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::classify_sdk_error;
use crate::error::CloudError;
use crate::ports::{ClusterStore, KeyClaim, ListFilter, RecordPage};
use crate::record::{ClusterRecord, Event, Status};

/// The index listing clusters newest first.
pub const GSI1: &str = "gsi1";
/// The `gsi1pk` of every cluster record.
const CLUSTERS: &str = "CLUSTERS";
/// Items one `list` query reads at most per page (before filtering).
const LIST_PAGE: i32 = 100;
/// The largest page `list` returns.
const LIST_MAX: u32 = 1000;
/// Query pages one `list` call reads at most: a filter that matches little (`status=ACTIVE` over
/// thousands of `DELETED` records) answers with what it found and a token, in bounded time,
/// instead of reading the whole index (API Gateway gives up after 29 s).
const LIST_QUERIES_PER_CALL: usize = 3;

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB adapter: one client and the table name, built once per cold start.
#[derive(Debug, Clone)]
pub struct Dynamo {
    client: Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn record_pk(cluster_id: &str) -> String {
    format!("CLUSTER#{cluster_id}")
}

/// The table's TTL attribute (epoch seconds; `TimeToLiveSpecification` in infra/template.yaml).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// How long an idempotency key answers with its first cluster (a day, as client retries go).
pub const IDEMPOTENCY_KEY_TTL_SECONDS: i64 = 24 * 3600;

fn claim_pk(name: &str) -> String {
    format!("NAME#{name}")
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn string_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// An idempotency key's item as the claim it holds.
fn key_claim_of(item: &Item) -> KeyClaim {
    let text = |name: &str| string_attr(item, name).unwrap_or_default().to_string();
    KeyClaim::Existing {
        cluster_id: text("cluster_id"),
        request_hash: text("request_hash"),
    }
}

/// An RFC 3339 time with a fixed-width fraction (nanoseconds), so that keys sort by time even when
/// one stamp has no fraction and another has a short one. Unparsable text is kept as it is.
fn sortable_time(t: &str) -> String {
    match OffsetDateTime::parse(t, &Rfc3339) {
        Ok(dt) => {
            let dt = dt.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                dt.nanosecond()
            )
        }
        Err(_) => t.to_string(),
    }
}

/// The record item.
fn record_item(record: &ClusterRecord) -> Result<Item, CloudError> {
    let json = serde_json::to_string(record)
        .map_err(|e| CloudError::Other(format!("cannot encode record: {e}")))?;
    let mut item = key(record_pk(&record.id), "RECORD");
    item.insert("record".into(), s(json));
    item.insert("status".into(), s(record.status.as_str()));
    item.insert("name".into(), s(&record.spec.name));
    item.insert("region".into(), s(&record.spec.region));
    item.insert("version".into(), n(record.version));
    item.insert("gsi1pk".into(), s(CLUSTERS));
    item.insert(
        "gsi1sk".into(),
        s(format!(
            "{}#{}",
            sortable_time(&record.created_at),
            record.id
        )),
    );
    Ok(item)
}

/// Reads a record item back.
fn parse_record(item: &Item) -> Result<ClusterRecord, CloudError> {
    let json = string_attr(item, "record")
        .ok_or_else(|| CloudError::Other("record item without `record`".into()))?;
    let mut record: ClusterRecord = serde_json::from_str(json)
        .map_err(|e| CloudError::Other(format!("unreadable cluster record: {e}")))?;
    // The attribute the conditions test is the truth.
    if let Some(v) = item
        .get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
    {
        record.version = v;
    }
    Ok(record)
}

/// Which of a cancelled transaction's actions failed their condition.
fn cancelled_conditions(err: &SdkError<TransactWriteItemsError>) -> Option<Vec<bool>> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => Some(
            e.cancellation_reasons()
                .iter()
                .map(|r| r.code() == Some("ConditionalCheckFailed"))
                .collect(),
        ),
        _ => None,
    }
}

/// The opaque listing token: the last evaluated key, as JSON, in URL-safe base64.
fn encode_token(key: &Item) -> Result<String, CloudError> {
    let mut plain = BTreeMap::new();
    for (k, v) in key {
        let v = v
            .as_s()
            .map_err(|_| CloudError::Other(format!("non-string key attribute {k}")))?;
        plain.insert(k.clone(), v.clone());
    }
    let json = serde_json::to_vec(&plain).map_err(|e| CloudError::Other(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// Reads a token back; anything that is not one of ours is `Rejected`.
fn decode_token(token: &str) -> Result<Item, CloudError> {
    let invalid = || CloudError::Rejected("invalid next_token".into());
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| invalid())?;
    let plain: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let keys: Vec<&str> = plain.keys().map(String::as_str).collect();
    if keys != ["gsi1pk", "gsi1sk", "pk", "sk"]
        || plain["gsi1pk"] != CLUSTERS
        || !plain["pk"].starts_with("CLUSTER#")
        || plain["sk"] != "RECORD"
    {
        return Err(invalid());
    }
    Ok(plain.into_iter().map(|(k, v)| (k, s(v))).collect())
}

/// The key of a listed record item (what `ExclusiveStartKey` resumes after).
fn list_key(item: &Item) -> Item {
    ["pk", "sk", "gsi1pk", "gsi1sk"]
        .into_iter()
        .filter_map(|k| item.get(k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

impl Dynamo {
    /// Builds the DynamoDB client from the shared configuration, for `table`.
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Dynamo {
            client: Client::new(config),
            table: table.into(),
        }
    }

    /// Wraps a client built elsewhere.
    pub fn from_client(client: Client, table: impl Into<String>) -> Self {
        Dynamo {
            client,
            table: table.into(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get_item(&self, key: Item) -> Result<Option<Item>, CloudError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(out.item().cloned())
    }

    fn put(&self, item: Item) -> aws_sdk_dynamodb::types::builders::PutBuilder {
        Put::builder().table_name(&self.table).set_item(Some(item))
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), SdkError<TransactWriteItemsError>> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
    }

    /// The conditional put of a record whose stored version is `expected`.
    fn versioned_put(&self, record: &ClusterRecord, expected: u64) -> Result<Put, CloudError> {
        self.put(record_item(record)?)
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(expected))
            .build()
            .map_err(|e| CloudError::Other(e.to_string()))
    }
}

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> CloudError {
    CloudError::Other(e.to_string())
}

#[async_trait]
impl ClusterStore for Dynamo {
    async fn create(&self, record: &ClusterRecord) -> Result<bool, CloudError> {
        let put_record = self
            .put(record_item(record)?)
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;
        let mut claim = key(claim_pk(&record.spec.name), "CLAIM");
        claim.insert("cluster_id".into(), s(&record.id));
        let put_claim = self
            .put(claim)
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;
        let items = vec![
            TransactWriteItem::builder().put(put_record).build(),
            TransactWriteItem::builder().put(put_claim).build(),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(true),
            // The id exists already (a retry) or the name is taken: the caller tells which.
            Err(e) if cancelled_conditions(&e).is_some_and(|c| c.contains(&true)) => Ok(false),
            Err(e) => Err(classify_sdk_error(&e)),
        }
    }

    async fn get(&self, cluster_id: &str) -> Result<Option<ClusterRecord>, CloudError> {
        match self.get_item(key(record_pk(cluster_id), "RECORD")).await? {
            Some(item) => parse_record(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn find_by_name(&self, name: &str) -> Result<Option<ClusterRecord>, CloudError> {
        let Some(claim) = self.get_item(key(claim_pk(name), "CLAIM")).await? else {
            return Ok(None);
        };
        let Some(cluster_id) = string_attr(&claim, "cluster_id") else {
            return Ok(None);
        };
        Ok(self.get(cluster_id).await?.filter(|r| r.status.is_live()))
    }

    async fn update(&self, record: &ClusterRecord) -> Result<ClusterRecord, CloudError> {
        let mut next = record.clone();
        next.version = record.version + 1;
        next.updated_at = crate::clock::now_rfc3339();
        if next.status != Status::Deleted {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(record_item(&next)?))
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(record.version))
                .send()
                .await
                .map_err(|e| classify_sdk_error(&e))?;
            return Ok(next);
        }
        let put = self.versioned_put(&next, record.version)?;
        // DELETED releases the name: delete the claim if it is (still) this cluster's.
        let release = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(claim_pk(&record.spec.name), "CLAIM")))
            .condition_expression("attribute_not_exists(pk) OR cluster_id = :id")
            .expression_attribute_values(":id", s(&record.id))
            .build()
            .map_err(build_error)?;
        let items = vec![
            TransactWriteItem::builder().put(put.clone()).build(),
            TransactWriteItem::builder().delete(release).build(),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(next),
            Err(e) => match cancelled_conditions(&e) {
                Some(c) if c.first() == Some(&true) => Err(CloudError::ConditionFailed),
                // The name belongs to another cluster now: nothing to release, only the record to write.
                Some(c) if c.get(1) == Some(&true) => {
                    let items = vec![TransactWriteItem::builder().put(put).build()];
                    self.transact(items)
                        .await
                        .map_err(|e| classify_sdk_error(&e))?;
                    Ok(next)
                }
                _ => Err(classify_sdk_error(&e)),
            },
        }
    }

    async fn list(
        &self,
        filter: &ListFilter,
        next_token: Option<&str>,
        limit: u32,
    ) -> Result<RecordPage, CloudError> {
        let limit = limit.clamp(1, LIST_MAX) as usize;
        let mut start = next_token.map(decode_token).transpose()?;
        let mut conditions = Vec::new();
        let mut names = HashMap::new();
        let mut values = HashMap::from([(":p".to_string(), s(CLUSTERS))]);
        if let Some(status) = filter.status {
            conditions.push("#status = :status");
            names.insert("#status".to_string(), "status".to_string());
            values.insert(":status".to_string(), s(status.as_str()));
        }
        if let Some(region) = &filter.region {
            conditions.push("#region = :region");
            names.insert("#region".to_string(), "region".to_string());
            values.insert(":region".to_string(), s(region));
        }
        let filter_expression = (!conditions.is_empty()).then(|| conditions.join(" AND "));
        let mut records = Vec::new();
        for query in 1.. {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .key_condition_expression("gsi1pk = :p")
                .set_filter_expression(filter_expression.clone())
                .set_expression_attribute_names((!names.is_empty()).then(|| names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .limit(LIST_PAGE)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify_sdk_error(&e))?;
            let items = out.items();
            for (i, item) in items.iter().enumerate() {
                match parse_record(item) {
                    Ok(record) => records.push(record),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable cluster record"),
                }
                if records.len() == limit {
                    // Full: resume after this item, unless it was the very last one.
                    let more = i + 1 < items.len() || out.last_evaluated_key().is_some();
                    let next_token = if more {
                        Some(encode_token(&list_key(item))?)
                    } else {
                        None
                    };
                    return Ok(RecordPage {
                        records,
                        next_token,
                    });
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() && query >= LIST_QUERIES_PER_CALL => {
                    return Ok(RecordPage {
                        records,
                        next_token: Some(encode_token(k)?),
                    })
                }
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => {
                    return Ok(RecordPage {
                        records,
                        next_token: None,
                    })
                }
            }
        }
        unreachable!("the loop returns")
    }

    async fn append_event(&self, event: &Event) -> Result<(), CloudError> {
        let json = serde_json::to_string(event)
            .map_err(|e| CloudError::Other(format!("cannot encode event: {e}")))?;
        let time = sortable_time(&event.time);
        let mut last = CloudError::ConditionFailed;
        // A random suffix keeps two events of the same instant apart; a collision just draws again.
        for _ in 0..3 {
            let suffix = format!("{:06x}", rand::random::<u32>() & 0x00ff_ffff);
            let mut item = key(
                record_pk(&event.cluster_id),
                &format!("EVENT#{time}#{suffix}"),
            );
            item.insert("event".into(), s(&json));
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(e) => {
                    last = classify_sdk_error(&e);
                    if last != CloudError::ConditionFailed {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    async fn events(&self, cluster_id: &str) -> Result<Vec<Event>, CloudError> {
        let mut events = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :e)")
                .expression_attribute_values(":pk", s(record_pk(cluster_id)))
                .expression_attribute_values(":e", s("EVENT#"))
                .scan_index_forward(true)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify_sdk_error(&e))?;
            for item in out.items() {
                match string_attr(item, "event").map(serde_json::from_str::<Event>) {
                    Some(Ok(event)) => events.push(event),
                    _ => tracing::warn!(cluster_id, "skipping an unreadable event"),
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(events),
            }
        }
    }

    async fn claim_key(
        &self,
        key_name: &str,
        cluster_id: &str,
        request_hash: &str,
    ) -> Result<KeyClaim, CloudError> {
        let item_key = key(format!("IDEMPOTENCY#{key_name}"), "KEY");
        let now = crate::clock::now_epoch();
        let mut item = item_key.clone();
        item.insert("cluster_id".into(), s(cluster_id));
        item.insert("request_hash".into(), s(request_hash));
        item.insert("created_at".into(), s(crate::clock::now_rfc3339()));
        item.insert(
            TTL_ATTRIBUTE.into(),
            AttributeValue::N((now + IDEMPOTENCY_KEY_TTL_SECONDS).to_string()),
        );
        // DynamoDB deletes expired items lazily (within days): an expired key is free already.
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(format!(
                "attribute_not_exists(pk) OR {TTL_ATTRIBUTE} < :now"
            ))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(KeyClaim::Claimed),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                let existing = self.get_item(item_key).await?.ok_or_else(|| {
                    CloudError::Transient("idempotency key vanished while read".into())
                })?;
                Ok(key_claim_of(&existing))
            }
            Err(e) => Err(classify_sdk_error(&e)),
        }
    }

    async fn find_key(&self, key_name: &str) -> Result<Option<KeyClaim>, CloudError> {
        let item = self
            .get_item(key(format!("IDEMPOTENCY#{key_name}"), "KEY"))
            .await?;
        // Expired but not yet deleted by DynamoDB: free, as `claim_key` treats it.
        let now = crate::clock::now_epoch();
        Ok(item
            .filter(|i| {
                i.get(TTL_ATTRIBUTE)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_none_or(|expires| expires >= now)
            })
            .map(|i| key_claim_of(&i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_text() {
        let a = sortable_time("2024-05-01T10:00:00Z");
        let b = sortable_time("2024-05-01T10:00:00.5Z");
        let c = sortable_time("2024-05-01T10:00:00.123456789Z");
        assert_eq!(a, "2024-05-01T10:00:00.000000000Z");
        assert!(a < c && c < b, "{a} {c} {b}");
        assert_eq!(sortable_time("not a time"), "not a time");
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        let key: Item = [
            ("pk", "CLUSTER#c-1"),
            ("sk", "RECORD"),
            ("gsi1pk", "CLUSTERS"),
            ("gsi1sk", "2024#c-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), s(v)))
        .collect();
        let token = encode_token(&key).unwrap();
        assert_eq!(decode_token(&token).unwrap(), key);
        for garbage in [
            "",
            "garbage!",
            "e30",
            &URL_SAFE_NO_PAD.encode(b"{\"pk\":\"x\"}"),
        ] {
            assert!(
                matches!(decode_token(garbage), Err(CloudError::Rejected(_))),
                "{garbage}"
            );
        }
    }
}
