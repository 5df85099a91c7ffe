//! Lambda `store-kubeconfig`: wires the AWS adapters to [`mecplane::stages::store_kubeconfig`] once per cold
//! start and serves invocations with it. EC2 and SSM Run Command clients follow the cluster's
//! region ([`Regional`]); the table and parameters stay in the control plane's region.

use mecplane::aws::{dynamodb::Dynamo, ec2::Ec2, ssm::Ssm, Regional};
use mecplane::lambda::{self, StageConfig};
use mecplane::stages::store_kubeconfig;
use mecplane::state::CreateState;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let config = StageConfig::from_env()?;
    let sdk = mecplane::aws::load_config().await;
    let ec2 = Regional::new(&sdk, Ec2::new);
    let commands = Regional::new(&sdk, Ssm::new);
    let parameters = &Ssm::new(&sdk);
    let store = &Dynamo::new(&sdk, &config.table);
    lambda::serve(|state: CreateState| {
        let (ec2, commands) = (
            ec2.region(&state.spec.region),
            commands.region(&state.spec.region),
        );
        async move { store_kubeconfig::run(&commands, &ec2, parameters, store, state).await }
    })
    .await
}
