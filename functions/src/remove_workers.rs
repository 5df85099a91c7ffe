//! Lambda `remove-workers`: [`mecplane::stages::remove_workers`] drains, removes and terminates the workers a scale down drops.

use mecplane::stages::remove_workers;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(remove_workers::run).await
}
