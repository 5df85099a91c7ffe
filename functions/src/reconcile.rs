//! Lambda `reconcile`: [`mecplane::reconcile::run`] on the EventBridge schedule and on EC2
//! instance state-change events (a run targeted at that instance's cluster). Builds the clients
//! once per cold start; each run's report is the answer, and its metrics go to the log as one
//! CloudWatch embedded-metric-format line.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{service_fn, LambdaEvent};
use mecplane::reconcile::{self, ReconcileEvent, Report};

use crate::runtime::{Control, Error};

/// Builds the clients once, then serves runs.
pub async fn serve() -> Result<(), Error> {
    let control = Control::load().await?;
    let ports_in = control.ports_in();
    let (ctx, fleet) = (&control.ctx, &control.fleet(&ports_in));
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ReconcileEvent>| async move {
            let started = Instant::now();
            let report: Report = reconcile::run(ctx, fleet, &event.payload).await?;
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default();
            println!("{}", report.emf(started.elapsed().as_millis(), now_ms));
            Ok::<_, Error>(report)
        },
    ))
    .await
}
