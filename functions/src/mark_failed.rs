//! Lambda `mark-failed`: [`mecplane::stages::mark_failed`] records a failed create (or a failed cleanup) before the teardown.

use mecplane::stages::mark_failed;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(mark_failed::handle).await
}
