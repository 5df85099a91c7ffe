//! Lambda `register`: wires the AWS adapters to [`mecplane::stages::register`] once per cold
//! start and serves invocations with it.

use mecplane::aws::dynamodb::Dynamo;
use mecplane::lambda::{self, StageConfig};
use mecplane::stages::register;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let config = StageConfig::from_env()?;
    let sdk = mecplane::aws::load_config().await;
    let store = Dynamo::new(&sdk, &config.table);
    let policy = mecplane::spec::Policy::from_env();
    lambda::serve(|event: mecplane::state::RegisterEvent| register::run(&store, &policy, event))
        .await
}
