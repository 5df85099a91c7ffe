//! Lambda `terminate-nodes`: wires the AWS adapters to [`mecplane::stages::terminate_nodes`] once per cold
//! start and serves invocations with it.

use mecplane::aws::{dynamodb::Dynamo, ec2::Ec2};
use mecplane::lambda::{self, StageConfig};
use mecplane::stages::terminate_nodes;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let config = StageConfig::from_env()?;
    let sdk = mecplane::aws::load_config().await;
    let ec2 = Ec2::new(&sdk);
    let store = Dynamo::new(&sdk, &config.table);
    lambda::serve(|state| terminate_nodes::run(&ec2, &store, state)).await
}
