//! Lambda `load-balancer`: [`mecplane::stages::load_balancer`] puts a network load balancer in front of the control planes (`api_endpoint: "nlb"`) and keeps its targets the live control planes.

use mecplane::stages::load_balancer;

use crate::runtime::{Cloud, Error};

/// Builds the clients once, then serves invocations.
pub async fn serve() -> Result<(), Error> {
    Cloud::load()
        .await?
        .serve_balanced(load_balancer::run)
        .await
}
