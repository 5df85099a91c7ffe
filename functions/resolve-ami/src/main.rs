//! Lambda `resolve-ami`: wires the AWS adapters to [`mecplane::stages::resolve_ami`] once per cold
//! start and serves invocations with it.

use mecplane::aws::{dynamodb::Dynamo, ssm::Ssm};
use mecplane::lambda::{self, StageConfig};
use mecplane::stages::resolve_ami;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let config = StageConfig::from_env()?;
    let sdk = mecplane::aws::load_config().await;
    let ssm = Ssm::new(&sdk);
    let store = Dynamo::new(&sdk, &config.table);
    lambda::serve(|state| resolve_ami::run(&ssm, &store, &config, state)).await
}
