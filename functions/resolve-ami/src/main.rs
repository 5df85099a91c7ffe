//! Lambda `resolve-ami`: wires the AWS adapters to [`mecplane::stages::resolve_ami`] once per cold
//! start and serves invocations with it. AMI ids are regional: the public parameters are read in
//! the cluster's region ([`Regional`]); the table stays in the control plane's region.

use mecplane::aws::{dynamodb::Dynamo, ssm::Ssm, Regional};
use mecplane::lambda::{self, StageConfig};
use mecplane::stages::resolve_ami;
use mecplane::state::CreateState;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let config = StageConfig::from_env()?;
    let sdk = mecplane::aws::load_config().await;
    let ami_parameters = Regional::new(&sdk, Ssm::new);
    let store = &Dynamo::new(&sdk, &config.table);
    let config = &config;
    lambda::serve(|state: CreateState| {
        let ami_parameters = ami_parameters.region(&state.spec.region);
        async move { resolve_ami::run(&ami_parameters, store, config, state).await }
    })
    .await
}
