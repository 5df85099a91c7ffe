//! Lambda `finish-delete`: [`mecplane::stages::finish_delete`] marks the cluster `DELETED` and frees its name.

use mecplane::stages::finish_delete;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(finish_delete::run).await
}
