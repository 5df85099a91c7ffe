//! Lambda `resolve-ami`: [`mecplane::stages::resolve_ami`] looks up the Ubuntu AMI for the cluster's region and architecture.

use mecplane::stages::resolve_ami;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(resolve_ami::run).await
}
