//! Lambda `activate`: wires the AWS adapters to [`mecplane::stages::activate`] once per cold
//! start and serves invocations with it.

use mecplane::aws::dynamodb::Dynamo;
use mecplane::lambda::{self, StageConfig};
use mecplane::stages::activate;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let config = StageConfig::from_env()?;
    let sdk = mecplane::aws::load_config().await;
    let store = Dynamo::new(&sdk, &config.table);
    lambda::serve(|state| activate::run(&store, state)).await
}
