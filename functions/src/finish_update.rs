//! Lambda `finish-update`: [`mecplane::stages::finish_update`] records the update `Successful` and the cluster `ACTIVE`.

use mecplane::stages::finish_update;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(finish_update::run).await
}
