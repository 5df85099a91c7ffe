//! Lambda `delete-security-group`: [`mecplane::stages::delete_security_group`] removes the cluster's security group.

use mecplane::stages::delete_security_group;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(delete_security_group::run).await
}
