//! Lambda `bootstrap`: [`mecplane::stages::bootstrap`] installs MicroK8s on the first control plane and creates the join token.

use mecplane::stages::bootstrap;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(bootstrap::run).await
}
