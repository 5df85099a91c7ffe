//! Lambda `await-terminated`: wires the AWS adapters to [`mecplane::stages::await_terminated`] once per cold
//! start and serves invocations with it.

use mecplane::aws::ec2::Ec2;
use mecplane::lambda;
use mecplane::stages::await_terminated;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_tracing();
    let sdk = mecplane::aws::load_config().await;
    let ec2 = Ec2::new(&sdk);
    lambda::serve(|state| await_terminated::run(&ec2, state)).await
}
