//! Lambda `reconcile`: [`mecplane::reconcile::run`] on the EventBridge schedule and on EC2
//! instance state-change events (a run targeted at that instance's cluster). Builds the clients
//! once per cold start; each run's report is the answer, and its metrics go to the log as one
//! CloudWatch embedded-metric-format line.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{service_fn, LambdaEvent};
use mecplane::api::{ApiConfig, ApiContext};
use mecplane::aws::{dynamodb::Dynamo, ec2::Ec2, sfn::StepFunctions, ssm::Ssm, Regional};
use mecplane::config::StageConfig;
use mecplane::ports::Instances;
use mecplane::reconcile::{self, Fleet, ReconcileEvent, Report, Settings};

use crate::runtime::Error;

/// Builds the clients once, then serves runs.
pub async fn serve() -> Result<(), Error> {
    let table = StageConfig::from_env()?.table;
    let config = ApiConfig::from_env()?;
    let sdk = mecplane::aws::load_config().await;
    let allowed = config.policy.allowed_regions.clone();
    let ctx = ApiContext {
        store: Dynamo::new(&sdk, table),
        executions: StepFunctions::new(&sdk),
        parameters: Ssm::new(&sdk),
        config,
    };
    let ec2 = Regional::new(&sdk, Ec2::new);
    let instances_in = move |region: &str| Box::new(ec2.region(region)) as Box<dyn Instances>;
    let settings = Settings::from_env();
    let fleet = Fleet {
        instances_in: &instances_in,
        allowed_regions: &allowed,
        settings: &settings,
    };
    let (ctx, fleet) = (&ctx, &fleet);
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
