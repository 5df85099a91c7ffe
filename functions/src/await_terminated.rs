//! Lambda `await-terminated`: [`mecplane::stages::await_terminated`] one poll of the teardown: are the cluster's instances gone.

use mecplane::stages::await_terminated;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(await_terminated::run).await
}
