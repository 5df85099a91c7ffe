//! The `reconcile` function's triggers, emulated as the stack deploys them (infra/template.yaml):
//!
//! - the schedule (`ReconcileSchedule`, EventBridge Scheduler): every
//!   `--reconcile-interval-seconds` / `MECPLANE_RECONCILE_INTERVAL_SECONDS` seconds (default: the
//!   template's `ReconcileRateMinutes` × 60; 0 = off) the gateway invokes the function with the
//!   schedule's input `{"source":"mecplane.schedule"}`. The first run is one interval after the
//!   start. A tick that finds the previous scheduled run still going is skipped (and counted);
//! - the EC2 rule (`ReconcileOnInstanceStateChange`): after a `TerminateInstances` or
//!   `StopInstances` that passed through the gateway and that moto accepted, the gateway invokes the
//!   function once per instance with the EventBridge event EC2 sends (`shutting-down` for a
//!   terminate, `stopping` for a stop), in the background: the EC2 answer is not held. As with a
//!   rule, only requests signed for the stack's own region count; instances terminated in moto by
//!   another way (the simulator's `terminate_during_command`) send no event.
//!
//! Invocations go through the function's pool like every other one (its processes, its timeout,
//! `/_local/functions` counts them). `GET /_local/reconciles` lists them, oldest first (the last
//! [`KEEP`]): `{"interval_seconds": n|null, "skipped_ticks": n, "dropped": n, "reconciles":
//! [{"seq", "trigger": "schedule"|"ec2", "instance_id", "state", "time", "finished_at",
//! "duration_ms", "status": "running"|"succeeded"|"failed", "request_id", "response", "error",
//! "event"}]}`; `response` is the function's answer, `error` its `{"errorType","errorMessage"}`.
//! Nothing runs when the gateway hosts no `reconcile` function.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use mecplane_nodesim::faults::parse_instance_ids;
use serde::Serialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::app::AppState;
use crate::functions::Outcome;

/// The function the triggers run (its `Handler`).
pub const FUNCTION: &str = "reconcile";

/// The template parameter holding the schedule's rate, in minutes.
pub const RATE_PARAMETER: &str = "ReconcileRateMinutes";

/// `ReconcileRateMinutes`' default, for a template that does not say (`--skip-provision`).
pub const DEFAULT_RATE_MINUTES: u64 = 5;

/// The schedule target's `Input`.
pub const SCHEDULE_SOURCE: &str = "mecplane.schedule";

/// The `detail-type` of EC2's state-change events.
pub const EC2_DETAIL_TYPE: &str = "EC2 Instance State-change Notification";

/// How many runs `/_local/reconciles` keeps (the oldest go first).
pub const KEEP: usize = 1000;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The emulated EventBridge schedule.
    Schedule,
    /// An emulated EC2 state-change event.
    Ec2,
}

/// How a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Invoked, no answer yet.
    Running,
    /// The function answered.
    Succeeded,
    /// A function error (or the process died, or timed out).
    Failed,
}

/// One invocation of the function by a trigger.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// 1, 2, … in the order the runs started.
    pub seq: u64,
    /// What started it.
    pub trigger: Trigger,
    /// The instance of an EC2 event.
    pub instance_id: Option<String>,
    /// The state of an EC2 event.
    pub state: Option<String>,
    /// When it was invoked (RFC 3339).
    pub time: String,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
    /// How long it took.
    pub duration_ms: Option<u64>,
    /// How it stands.
    pub status: RunStatus,
    /// The Lambda request id.
    pub request_id: Option<String>,
    /// The function's answer.
    pub response: Option<Value>,
    /// The function's error payload.
    pub error: Option<Value>,
    /// The event it was given.
    pub event: Value,
    #[serde(skip)]
    started: Option<Instant>,
}

/// The runs so far, and the schedule's state.
pub struct Reconciles {
    interval: Option<Duration>,
    ec2_events: bool,
    runs: Mutex<VecDeque<Run>>,
    next_seq: AtomicU64,
    dropped: AtomicU64,
    scheduled_running: AtomicBool,
    skipped_ticks: AtomicU64,
}

impl Default for Reconciles {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Reconciles {
    /// No runs yet; `interval` is the schedule's period (`None`: off).
    pub fn new(interval: Option<Duration>) -> Self {
        Self {
            interval,
            ec2_events: true,
            runs: Mutex::new(VecDeque::new()),
            next_seq: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            scheduled_running: AtomicBool::new(false),
            skipped_ticks: AtomicU64::new(0),
        }
    }

    /// Whether EC2 state changes send events (the rule; on unless the gateway was told otherwise).
    pub fn with_ec2_events(mut self, on: bool) -> Self {
        self.ec2_events = on;
        self
    }

    /// The schedule's period.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Run>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A schedule tick: `true` when no scheduled run is going (the caller starts one and calls
    /// [`Reconciles::scheduled_run_ended`] after it), `false` (and the tick counted as skipped)
    /// otherwise.
    pub fn try_begin_scheduled(&self) -> bool {
        let free = self
            .scheduled_running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !free {
            self.skipped_ticks.fetch_add(1, Ordering::Relaxed);
        }
        free
    }

    /// The scheduled run started by [`Reconciles::try_begin_scheduled`] has ended.
    pub fn scheduled_run_ended(&self) {
        self.scheduled_running.store(false, Ordering::Release);
    }

    /// Notes a run that is starting; answers its `seq`.
    pub fn begin(
        &self,
        trigger: Trigger,
        instance_id: Option<&str>,
        state: Option<&str>,
        event: &Value,
    ) -> u64 {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let run = Run {
            seq,
            trigger,
            instance_id: instance_id.map(str::to_string),
            state: state.map(str::to_string),
            time: rfc3339(OffsetDateTime::now_utc()),
            finished_at: None,
            duration_ms: None,
            status: RunStatus::Running,
            request_id: None,
            response: None,
            error: None,
            event: event.clone(),
            started: Some(Instant::now()),
        };
        let mut runs = self.lock();
        runs.push_back(run);
        while runs.len() > KEEP {
            runs.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        seq
    }

    /// Notes how run `seq` ended.
    pub fn finish(&self, seq: u64, request_id: &str, outcome: &Outcome) {
        let mut runs = self.lock();
        let Some(run) = runs.iter_mut().find(|r| r.seq == seq) else {
            return; // dropped meanwhile
        };
        run.finished_at = Some(rfc3339(OffsetDateTime::now_utc()));
        run.duration_ms = run.started.map(|s| s.elapsed().as_millis() as u64);
        run.request_id = Some(request_id.to_string());
        match outcome {
            Outcome::Success(body) => {
                run.status = RunStatus::Succeeded;
                run.response = Some(payload_json(body));
            }
            Outcome::Error(body) => {
                run.status = RunStatus::Failed;
                run.error = Some(payload_json(body));
            }
        }
    }

    /// The body of `GET /_local/reconciles`.
    pub fn to_json(&self) -> Value {
        let runs: Vec<Run> = self.lock().iter().cloned().collect();
        json!({
            "interval_seconds": self.interval.map(|d| d.as_secs()),
            "skipped_ticks": self.skipped_ticks.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "reconciles": runs,
        })
    }
}

/// A payload as JSON (a payload that is not JSON, as a string).
fn payload_json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The schedule's period: `flag` (`--reconcile-interval-seconds`) when given, else the template's
/// `ReconcileRateMinutes` × 60 ([`DEFAULT_RATE_MINUTES`] when the template gives no number); `None`
/// (off) when that is 0.
pub fn interval(flag: Option<u64>, template_rate_minutes: Option<&Value>) -> Option<Duration> {
    let seconds = match flag {
        Some(s) => s,
        None => {
            let minutes = template_rate_minutes
                .and_then(|v| match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                })
                .unwrap_or(DEFAULT_RATE_MINUTES);
            minutes.saturating_mul(60)
        }
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// The event a scheduled run gets: the schedule target's `Input`.
pub fn schedule_event() -> Value {
    json!({"source": SCHEDULE_SOURCE})
}

/// The event EventBridge delivers for an EC2 instance state change.
pub fn ec2_state_change_event(
    instance_id: &str,
    state: &str,
    region: &str,
    account: &str,
    at: OffsetDateTime,
) -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": EC2_DETAIL_TYPE,
        "source": "aws.ec2",
        "account": account,
        "time": rfc3339(at.replace_nanosecond(0).unwrap_or(at)),
        "region": region,
        "resources": [format!("arn:aws:ec2:{region}:{account}:instance/{instance_id}")],
        "detail": {"instance-id": instance_id, "state": state},
    })
}

/// The state change an EC2 query-protocol form body asks for: `("shutting-down", ids)` for a
/// `TerminateInstances`, `("stopping", ids)` for a `StopInstances`; `None` for anything else.
///
/// Both are read with the node simulator's EC2 form parser (the one its `terminate_fails` fault
/// uses).
pub fn requested_state_change(form_body: &[u8]) -> Option<(&'static str, Vec<String>)> {
    let (state, ids) = match parse_instance_ids(form_body, "TerminateInstances") {
        Some(ids) => ("shutting-down", ids),
        None => ("stopping", parse_instance_ids(form_body, "StopInstances")?),
    };
    (!ids.is_empty()).then_some((state, ids))
}

/// Invokes the function once with `event` and notes the run; `false` when the gateway hosts no
/// reconcile function (nothing is noted).
pub async fn run(
    app: &AppState,
    trigger: Trigger,
    instance_id: Option<&str>,
    state: Option<&str>,
    event: Value,
) -> bool {
    let Some(pool) = app.functions.get(FUNCTION).cloned() else {
        return false;
    };
    let seq = app.reconciles.begin(trigger, instance_id, state, &event);
    let (request_id, outcome) = pool
        .invoke(Bytes::from(event.to_string()), pool.arn().to_string(), None)
        .await;
    if let Outcome::Error(e) = &outcome {
        tracing::warn!(?trigger, instance_id, %request_id, error = %String::from_utf8_lossy(e), "reconcile failed");
    }
    app.reconciles.finish(seq, &request_id, &outcome);
    true
}

/// Starts the emulated schedule; `None` when it is off or the gateway hosts no reconcile function.
/// Abort the task to stop it.
pub fn spawn_schedule(app: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let period = app.reconciles.interval()?;
    app.functions.get(FUNCTION)?;
    tracing::info!(
        seconds = period.as_secs(),
        "reconcile runs on a schedule (MECPLANE_RECONCILE_INTERVAL_SECONDS)"
    );
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            if !app.reconciles.try_begin_scheduled() {
                tracing::info!("reconcile tick skipped: the previous scheduled run is still going");
                continue;
            }
            let app = app.clone();
            tokio::spawn(async move {
                // Ends the run even if the invocation panics.
                struct Ended(Arc<Reconciles>);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        self.0.scheduled_run_ended();
                    }
                }
                let _ended = Ended(app.reconciles.clone());
                run(&app, Trigger::Schedule, None, None, schedule_event()).await;
            });
        }
    }))
}

/// After moto answered an EC2 request that asked for `change` (see [`requested_state_change`]):
/// when it succeeded and was signed for the stack's region, one background run per instance with
/// its state-change event.
pub fn after_ec2_request(
    app: &AppState,
    headers: &HeaderMap,
    change: (&'static str, Vec<String>),
    status: StatusCode,
) {
    if !status.is_success() || !app.reconciles.ec2_events || app.functions.get(FUNCTION).is_none() {
        return;
    }
    let (region, service) = crate::calls::credential_scope(headers)
        .unwrap_or_else(|| (app.region.clone(), "ec2".to_string()));
    if service != "ec2" || region != app.region {
        tracing::debug!(%region, "EC2 state change outside the stack's region: no event");
        return;
    }
    let (state, ids) = change;
    let now = OffsetDateTime::now_utc();
    for id in ids {
        let event = ec2_state_change_event(&id, state, &region, app.account, now);
        let app = app.clone();
        tokio::spawn(async move {
            run(&app, Trigger::Ec2, Some(&id), Some(state), event).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_flag_wins_then_the_template_then_the_default() {
        let five = json!(5);
        assert_eq!(interval(Some(7), Some(&five)), Some(Duration::from_secs(7)));
        assert_eq!(interval(Some(0), Some(&five)), None, "0 switches it off");
        assert_eq!(interval(None, Some(&five)), Some(Duration::from_secs(300)));
        assert_eq!(
            interval(None, Some(&json!("12"))),
            Some(Duration::from_secs(720)),
            "a Default written as a string"
        );
        assert_eq!(interval(None, Some(&json!(0))), None);
        assert_eq!(
            interval(None, None),
            Some(Duration::from_secs(DEFAULT_RATE_MINUTES * 60)),
            "no template (--skip-provision): the template's default"
        );
        assert_eq!(
            interval(None, Some(&json!(["x"]))),
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn the_schedule_event_is_the_target_input() {
        assert_eq!(
            schedule_event().to_string(),
            r#"{"source":"mecplane.schedule"}"#
        );
    }

    #[test]
    fn ec2_events_have_eventbridge_shape() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
            + time::Duration::milliseconds(250);
        let e = ec2_state_change_event("i-0abc", "shutting-down", "us-east-1", "123456789012", at);
        assert_eq!(e["source"], "aws.ec2");
        assert_eq!(e["detail-type"], "EC2 Instance State-change Notification");
        assert_eq!(
            e["detail"],
            json!({"instance-id": "i-0abc", "state": "shutting-down"})
        );
        assert_eq!(e["version"], "0");
        assert_eq!(e["account"], "123456789012");
        assert_eq!(e["region"], "us-east-1");
        assert_eq!(e["time"], "2023-11-14T22:13:20Z");
        assert_eq!(
            e["resources"],
            json!(["arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"])
        );
        assert!(uuid::Uuid::parse_str(e["id"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn terminate_and_stop_requests_name_their_instances() {
        assert_eq!(
            requested_state_change(
                b"Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-0a&InstanceId.2=i-0b"
            ),
            Some((
                "shutting-down",
                vec!["i-0a".to_string(), "i-0b".to_string()]
            ))
        );
        assert_eq!(
            requested_state_change(b"Version=2016-11-15&Action=StopInstances&InstanceId.1=i-0c"),
            Some(("stopping", vec!["i-0c".to_string()]))
        );
        assert_eq!(
            requested_state_change(b"Action=DescribeInstances&InstanceId.1=i-0a"),
            None
        );
        assert_eq!(
            requested_state_change(b"Action=StartInstances&InstanceId.1=i-0a"),
            None
        );
        assert_eq!(requested_state_change(b"Action=TerminateInstances"), None);
        assert_eq!(requested_state_change(b""), None);
    }

    #[test]
    fn a_tick_is_skipped_while_the_scheduled_run_goes() {
        let r = Reconciles::new(Some(Duration::from_secs(1)));
        assert!(r.try_begin_scheduled());
        assert!(!r.try_begin_scheduled());
        assert!(!r.try_begin_scheduled());
        r.scheduled_run_ended();
        assert!(r.try_begin_scheduled());
        assert_eq!(r.to_json()["skipped_ticks"], 2);
        assert_eq!(r.to_json()["interval_seconds"], 1);
    }

    #[test]
    fn runs_are_listed_with_their_answer() {
        let r = Reconciles::new(None);
        let a = r.begin(Trigger::Schedule, None, None, &schedule_event());
        let b = r.begin(
            Trigger::Ec2,
            Some("i-0a"),
            Some("stopping"),
            &json!({"detail": {}}),
        );
        let listed = r.to_json();
        assert_eq!(listed["interval_seconds"], Value::Null);
        assert_eq!(listed["reconciles"][0]["status"], "running");
        assert_eq!(listed["reconciles"][1]["trigger"], "ec2");
        r.finish(
            a,
            "req-a",
            &Outcome::Success(Bytes::from_static(br#"{"repairs":[]}"#)),
        );
        r.finish(
            b,
            "req-b",
            &Outcome::Error(Bytes::from_static(
                br#"{"errorType":"Transient","errorMessage":"x"}"#,
            )),
        );
        let listed = r.to_json();
        let runs = listed["reconciles"].as_array().unwrap();
        assert_eq!(runs[0]["seq"], 1);
        assert_eq!(runs[0]["trigger"], "schedule");
        assert_eq!(runs[0]["instance_id"], Value::Null);
        assert_eq!(runs[0]["status"], "succeeded");
        assert_eq!(runs[0]["response"], json!({"repairs": []}));
        assert_eq!(runs[0]["request_id"], "req-a");
        assert!(runs[0]["finished_at"].is_string() && runs[0]["time"].is_string());
        assert_eq!(runs[0]["event"], json!({"source": "mecplane.schedule"}));
        assert_eq!(runs[1]["instance_id"], "i-0a");
        assert_eq!(runs[1]["state"], "stopping");
        assert_eq!(runs[1]["status"], "failed");
        assert_eq!(runs[1]["error"]["errorType"], "Transient");
        assert_eq!(runs[1]["response"], Value::Null);
    }

    #[test]
    fn only_the_last_runs_are_kept() {
        let r = Reconciles::new(None);
        for _ in 0..KEEP + 3 {
            r.begin(Trigger::Schedule, None, None, &schedule_event());
        }
        let listed = r.to_json();
        assert_eq!(listed["dropped"], 3);
        assert_eq!(listed["reconciles"].as_array().unwrap().len(), KEEP);
        assert_eq!(listed["reconciles"][0]["seq"], 4);
    }
}
