//! Lambda `mark-failed`: wires the AWS adapters to [`mecplane::stages::mark_failed`] once per cold
//! start and serves invocations with it.

use mecplane::aws::dynamodb::Dynamo;
use mecplane::lambda::{self, StageConfig};
use mecplane::stages::mark_failed;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let config = StageConfig::from_env()?;
    let sdk = mecplane::aws::load_config().await;
    let store = Dynamo::new(&sdk, &config.table);
    lambda::serve(|input| mark_failed::handle(&store, input)).await
}
