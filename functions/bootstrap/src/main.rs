//! Lambda `bootstrap`: wires the AWS adapters to [`mecplane::stages::bootstrap`] once per cold
//! start and serves invocations with it.

use mecplane::aws::{dynamodb::Dynamo, ec2::Ec2, ssm::Ssm};
use mecplane::lambda::{self, StageConfig};
use mecplane::stages::bootstrap;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let config = StageConfig::from_env()?;
    let sdk = mecplane::aws::load_config().await;
    let ec2 = Ec2::new(&sdk);
    let ssm = Ssm::new(&sdk);
    let store = Dynamo::new(&sdk, &config.table);
    lambda::serve(|state| bootstrap::run(&ssm, &ec2, &ssm, &store, state)).await
}
