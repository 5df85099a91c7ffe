//! Lambda `register`: [`mecplane::stages::register`] validates the spec and registers the record (`CREATING`).

use mecplane::stages::register;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load().await?.serve(register::run).await
}
