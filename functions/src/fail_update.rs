//! Lambda `fail-update`: [`mecplane::stages::fail_update`] cleans up after a failed update and records it `Failed`, the cluster back to `ACTIVE`.

use mecplane::stages::fail_update;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(fail_update::run).await
}
