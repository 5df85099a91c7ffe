//! What every function does once per cold start and then per invocation: logging in Lambda's
//! format, the SDK configuration and the clients built once, and serving a stage with them.
//!
//! One [`Cloud`] holds every client a stage may use: an SDK client is a handle over the shared
//! configuration (building one costs microseconds and no network call), so a function holding a
//! client its stage never calls costs nothing; what a function may *do* is its IAM role's business
//! (`infra/template.yaml`, checked against the calls the tests see).

use mecplane::api::{ApiConfig, ApiContext};
use mecplane::aws::{
    dynamodb::Dynamo, ec2::Ec2, elbv2::Elbv2, sfn::StepFunctions, ssm::Ssm, Regional,
};
use mecplane::config::StageConfig;
use mecplane::reconcile::{Fleet, PortsIn, RegionPorts, Settings};
use mecplane::stages::Ports;
use mecplane::state::InRegion;
use mecplane::StageError;

/// The error a function's start-up or runtime loop ends with.
pub type Error = lambda_runtime::Error;

/// Sets up `tracing` as Lambda expects: JSON lines when `AWS_LAMBDA_LOG_FORMAT=JSON`, the level
/// from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init_tracing() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// The ports a stage gets on AWS.
pub type AwsPorts<'a> = Ports<'a, Ec2, Ssm, Ssm, Dynamo>;

/// The clients of one execution environment, built once at cold start.
pub struct Cloud {
    /// EC2, per cluster region (the home region's built now, others on first use).
    ec2: Regional<Ec2>,
    /// SSM Run Command and the public AMI parameters, per cluster region.
    ssm: Regional<Ssm>,
    /// Elastic Load Balancing (an HA cluster's API load balancer), per cluster region.
    elb: std::sync::Arc<Regional<Elbv2>>,
    /// Parameter Store in the control plane's region (the cluster's secrets).
    secrets: Ssm,
    /// The cluster table.
    store: Dynamo,
    /// The deployment settings.
    config: StageConfig,
}

impl Cloud {
    /// Reads the settings and builds the clients; a missing setting fails the init.
    pub async fn load() -> Result<Self, Error> {
        let config = StageConfig::from_env()?;
        let sdk = mecplane::aws::load_config().await;
        let (ec2, elb) = mecplane::aws::owned_by(&sdk, &config.deployment);
        Ok(Cloud {
            ec2,
            ssm: Regional::new(&sdk, Ssm::new),
            elb: std::sync::Arc::new(elb),
            secrets: Ssm::new(&sdk).with_secrets_key(config.secrets_key.clone()),
            store: Dynamo::new(&sdk, &config.table),
            config,
        })
    }

    /// Serves invocations with `stage`: the payload is deserialized into the stage's input, the
    /// stage gets the ports of the input's region, and a [`StageError`] becomes the function
    /// error whose `errorType` the state machines' `Retry`/`Catch` match.
    pub async fn serve<I, O, F>(self, stage: F) -> Result<(), Error>
    where
        I: serde::de::DeserializeOwned + InRegion,
        O: serde::Serialize,
        F: AsyncFn(&AwsPorts<'_>, I) -> Result<O, StageError>,
    {
        let (cloud, stage) = (&self, &stage);
        lambda_runtime::run(lambda_runtime::service_fn(
            move |event: lambda_runtime::LambdaEvent<I>| async move {
                let region = event.payload.region();
                let (ec2, ssm) = (cloud.ec2.region(region), cloud.ssm.region(region));
                let ports = Ports {
                    ec2: &ec2,
                    ssm: &ssm,
                    secrets: &cloud.secrets,
                    store: &cloud.store,
                    config: &cloud.config,
                };
                stage(&ports, event.payload)
                    .await
                    .inspect_err(|e| tracing::warn!(error_type = e.name(), "stage failed: {e}"))
            },
        ))
        .await
    }
}

impl Cloud {
    /// [`Cloud::serve`] for a stage that also works on load balancers: it gets the ELB client of
    /// the input's region beside the ports.
    pub async fn serve_balanced<I, O, F>(self, stage: F) -> Result<(), Error>
    where
        I: serde::de::DeserializeOwned + InRegion,
        O: serde::Serialize,
        F: AsyncFn(&AwsPorts<'_>, &Elbv2, I) -> Result<O, StageError>,
    {
        let elb = self.elb.clone();
        let stage = &stage;
        self.serve(async move |ports: &AwsPorts<'_>, input: I| {
            let balancers = elb.region(input.region());
            stage(ports, &balancers, input).await
        })
        .await
    }
}

/// What the `api` and `reconcile` functions share: the API's context (records, executions,
/// parameters, settings), the EC2, SSM and ELB clients of each region (built on first use) and
/// the reconcile's settings.
pub struct Control {
    pub ctx: ApiContext<Dynamo, StepFunctions, Ssm>,
    ec2: Regional<Ec2>,
    ssm: Regional<Ssm>,
    elb: Regional<Elbv2>,
    settings: Settings,
}

impl Control {
    /// Reads the environment and builds the clients, once per cold start.
    pub async fn load() -> Result<Self, Error> {
        let StageConfig {
            table, deployment, ..
        } = StageConfig::from_env()?;
        let config = ApiConfig::from_env()?;
        let sdk = mecplane::aws::load_config().await;
        let (ec2, elb) = mecplane::aws::owned_by(&sdk, &deployment);
        Ok(Control {
            ctx: ApiContext {
                store: Dynamo::new(&sdk, table),
                executions: StepFunctions::new(&sdk),
                parameters: Ssm::new(&sdk),
                config,
            },
            ec2,
            ssm: Regional::new(&sdk, Ssm::new),
            elb,
            settings: Settings::from_env(deployment),
        })
    }

    /// The adapters of a region, for [`Fleet::ports_in`].
    pub fn ports_in(&self) -> impl Fn(&str) -> RegionPorts + Send + Sync + '_ {
        move |region: &str| RegionPorts {
            ec2: Box::new(self.ec2.region(region)),
            ssm: Box::new(self.ssm.region(region)),
            balancers: Box::new(self.elb.region(region)),
        }
    }

    /// What a reconcile reaches beyond the context.
    pub fn fleet<'a>(&'a self, ports_in: &'a PortsIn<'a>) -> Fleet<'a> {
        Fleet {
            ports_in,
            allowed_regions: &self.ctx.config.policy.allowed_regions,
            settings: &self.settings,
        }
    }
}
