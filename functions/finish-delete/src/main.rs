//! Lambda `finish-delete`: wires the AWS adapters to [`mecplane::stages::finish_delete`] once per cold
//! start and serves invocations with it.

use mecplane::aws::dynamodb::Dynamo;
use mecplane::lambda::{self, StageConfig};
use mecplane::stages::finish_delete;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let config = StageConfig::from_env()?;
    let sdk = mecplane::aws::load_config().await;
    let store = Dynamo::new(&sdk, &config.table);
    lambda::serve(|state| finish_delete::run(&store, state)).await
}
