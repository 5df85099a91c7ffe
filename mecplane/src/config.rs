//! The deployment settings the stages read from the function's environment (set by
//! `infra/template.yaml`, or by the local stack from the same template).

use crate::resources::Deployment;
use crate::spec::Policy;

/// The public SSM parameter tree holding Ubuntu's AMI ids.
pub const DEFAULT_AMI_PARAMETER_PREFIX: &str = "/aws/service/canonical/ubuntu/server";

/// Deployment settings the stages need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageConfig {
    /// The DynamoDB table (`MECPLANE_TABLE`).
    pub table: String,
    /// Who this deployment is (`MECPLANE_DEPLOYMENT`) and the instance profile its nodes are
    /// launched with (`MECPLANE_NODE_INSTANCE_PROFILE`): its names, tags and what it owns.
    pub deployment: Deployment,
    /// Where Ubuntu's AMI parameters live (`MECPLANE_AMI_PARAMETER_PREFIX`).
    pub ami_parameter_prefix: String,
    /// The KMS key the stages' SecureStrings are encrypted with (`MECPLANE_SECRETS_KEY`; unset:
    /// the account's `aws/ssm` key).
    pub secrets_key: Option<String>,
    /// The accounts (or aliases such as `amazon`) whose images nodes may boot
    /// (`MECPLANE_AMI_OWNERS`, comma list: the template's `AmiOwners`, which also binds the launch
    /// role's `ec2:Owner`); empty: any owner.
    pub ami_owners: Vec<String>,
    /// What a spec may ask for and its defaults (regions, instance type).
    pub policy: Policy,
}

impl StageConfig {
    /// Reads the environment; a missing table is an error because nothing works without it.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Ok(StageConfig {
            table: var("MECPLANE_TABLE").ok_or("MECPLANE_TABLE is not set")?,
            deployment: Deployment::from_env()?,
            ami_parameter_prefix: var("MECPLANE_AMI_PARAMETER_PREFIX")
                .unwrap_or_else(|| DEFAULT_AMI_PARAMETER_PREFIX.into())
                .trim_end_matches('/')
                .to_string(),
            secrets_key: var("MECPLANE_SECRETS_KEY"),
            ami_owners: var("MECPLANE_AMI_OWNERS")
                .map(|v| {
                    v.split(',')
                        .map(|o| o.trim().to_string())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            policy: Policy::from_env(),
        })
    }
}
