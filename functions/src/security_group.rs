//! Lambda `security-group`: [`mecplane::stages::security_group`] creates the cluster's security group with exactly its rules.

use mecplane::stages::security_group;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(security_group::run).await
}
