//! Lambda `begin-update`: [`mecplane::stages::begin_update`] finds the update on the record (`UPDATING`, the update `InProgress`) and builds the working state.

use mecplane::stages::begin_update;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(begin_update::run).await
}
