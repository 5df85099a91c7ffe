//! Lambda `await-terminated`: wires the AWS adapters to [`mecplane::stages::await_terminated`] once per cold
//! start and serves invocations with it. EC2 clients follow the cluster's
//! region ([`Regional`]).

use mecplane::aws::{ec2::Ec2, Regional};
use mecplane::lambda;
use mecplane::stages::await_terminated;
use mecplane::state::TeardownState;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let sdk = mecplane::aws::load_config().await;
    let ec2 = Regional::new(&sdk, Ec2::new);
    lambda::serve(|state: TeardownState| {
        let ec2 = ec2.region(&state.region);
        async move { await_terminated::run(&ec2, state).await }
    })
    .await
}
