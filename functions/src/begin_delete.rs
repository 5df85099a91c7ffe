//! Lambda `begin-delete`: [`mecplane::stages::begin_delete`] finds the cluster by id or name, marks it `DELETING` and starts the teardown.

use mecplane::stages::begin_delete;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(begin_delete::run).await
}
