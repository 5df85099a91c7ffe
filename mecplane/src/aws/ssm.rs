//! SSM: Run Command on the nodes ([`NodeCommands`]) and Parameter Store ([`Parameters`]).
//!
//! Command text carries join tokens and SecureString values are secrets: neither is ever logged,
//! and the errors of the calls that carry them keep the service's error code but drop its message
//! (a validation message can quote the value it refused).

use std::collections::HashSet;

use async_trait::async_trait;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{
    CommandInvocationStatus, InstanceInformationStringFilter, ParameterTier, ParameterType,
};
use aws_sdk_ssm::Client;

use super::{classify_sdk_error, classify_sdk_error_redacted};
use crate::error::CloudError;
use crate::ports::{
    AgentPing, CommandStatus, NodeCommands, ParameterInfo, Parameters, SentCommand,
};

/// The document that runs a shell script.
const RUN_SHELL_SCRIPT: &str = "AWS-RunShellScript";
/// How long SSM may take to deliver a command to an instance (its execution timeout is separate).
const DELIVERY_TIMEOUT_SECONDS: i32 = 600;
/// Instance ids per `DescribeInstanceInformation` filter.
const ONLINE_CHUNK: usize = 50;
/// How many recent invocations [`NodeCommands::sent`] looks at.
const SENT_LIMIT: usize = 50;
/// SSM's limit on a command comment.
const COMMENT_MAX: usize = 100;
/// Names per `DeleteParameters` call.
const DELETE_CHUNK: usize = 10;
/// The largest `DescribeParameters` page.
const DESCRIBE_PAGE: i32 = 50;
/// The largest value of the standard tier, in bytes.
const STANDARD_TIER_MAX: usize = 4096;

/// The SSM adapter: one client, built once per cold start.
#[derive(Debug, Clone)]
pub struct Ssm {
    client: Client,
    /// The KMS key SecureStrings are written with (`None`: the account's `aws/ssm` key).
    secrets_key: Option<String>,
}

impl Ssm {
    /// Builds the SSM client from the shared configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Ssm::from_client(Client::new(config))
    }

    /// Wraps a client built elsewhere.
    pub fn from_client(client: Client) -> Self {
        Ssm {
            client,
            secrets_key: None,
        }
    }

    /// Writes SecureStrings with this KMS key (id, ARN or `alias/…`).
    pub fn with_secrets_key(mut self, key: Option<String>) -> Self {
        self.secrets_key = key;
        self
    }

    async fn get_parameter(&self, name: &str, decrypt: bool) -> Result<Option<String>, CloudError> {
        match self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(decrypt)
            .send()
            .await
        {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_string)),
            Err(e) if e.code() == Some("ParameterNotFound") => Ok(None),
            Err(e) => Err(classify_sdk_error(&e)),
        }
    }

    /// Every agent `DescribeInstanceInformation` answers for one filter, all pages.
    async fn agents(&self, key: &str, values: &[String]) -> Result<Vec<AgentPing>, CloudError> {
        let filter = InstanceInformationStringFilter::builder()
            .key(key)
            .set_values(Some(values.to_vec()))
            .build()
            .map_err(|e| CloudError::Other(e.to_string()))?;
        let infos = self
            .client
            .describe_instance_information()
            .filters(filter)
            .max_results(50)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(infos
            .iter()
            .filter_map(|info| {
                Some(AgentPing {
                    instance_id: info.instance_id()?.to_string(),
                    status: info
                        .ping_status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    last_ping: info.last_ping_date_time().map(|t| t.secs()),
                })
            })
            .collect())
    }
}

/// The tier a value of `len` bytes needs.
fn tier_for(len: usize) -> ParameterTier {
    if len > STANDARD_TIER_MAX {
        ParameterTier::Advanced
    } else {
        ParameterTier::Standard
    }
}

/// Maps an invocation's status, details, exit code and output to a [`CommandStatus`].
fn command_status(
    status: Option<&CommandInvocationStatus>,
    details: Option<&str>,
    exit_code: i32,
    stdout: Option<&str>,
    stderr: Option<&str>,
) -> CommandStatus {
    let details = details.unwrap_or_default();
    if matches!(details, "ExecutionTimedOut" | "DeliveryTimedOut") {
        return CommandStatus::TimedOut;
    }
    match status {
        None
        | Some(CommandInvocationStatus::Pending)
        | Some(CommandInvocationStatus::InProgress)
        | Some(CommandInvocationStatus::Delayed)
        | Some(CommandInvocationStatus::Cancelling) => CommandStatus::Running,
        Some(CommandInvocationStatus::Success) => CommandStatus::Success {
            stdout: stdout.unwrap_or_default().into(),
        },
        Some(CommandInvocationStatus::TimedOut) => CommandStatus::TimedOut,
        Some(other) => CommandStatus::Failed {
            status: if details.is_empty() {
                other.as_str().to_string()
            } else {
                details.to_string()
            },
            exit_code,
            stdout: stdout.unwrap_or_default().into(),
            stderr: stderr.unwrap_or_default().into(),
        },
    }
}

#[async_trait]
impl NodeCommands for Ssm {
    async fn online(&self, instance_ids: &[String]) -> Result<Vec<String>, CloudError> {
        let online: HashSet<String> = self
            .pings(instance_ids)
            .await?
            .into_iter()
            .filter(AgentPing::is_online)
            .map(|p| p.instance_id)
            .collect();
        // In the order asked, once each.
        let mut seen = HashSet::new();
        Ok(instance_ids
            .iter()
            .filter(|id| online.contains(id.as_str()) && seen.insert(id.as_str()))
            .cloned()
            .collect())
    }

    async fn pings(&self, instance_ids: &[String]) -> Result<Vec<AgentPing>, CloudError> {
        let mut pings = Vec::new();
        for chunk in instance_ids.chunks(ONLINE_CHUNK) {
            pings.extend(self.agents("InstanceIds", chunk).await?);
        }
        Ok(pings)
    }

    async fn lost_agents(&self, instance_ids: &[String]) -> Result<Vec<AgentPing>, CloudError> {
        let wanted: HashSet<&str> = instance_ids.iter().map(String::as_str).collect();
        let lost = ["ConnectionLost".to_string(), "Inactive".to_string()];
        Ok(self
            .agents("PingStatus", &lost)
            .await?
            .into_iter()
            .filter(|p| wanted.contains(p.instance_id.as_str()))
            .collect())
    }

    async fn send(
        &self,
        instance_id: &str,
        script: &str,
        comment: &str,
        timeout_seconds: u32,
    ) -> Result<String, CloudError> {
        // The comment is the idempotency key: cutting it would make it unrecognisable in `sent`.
        if comment.chars().count() > COMMENT_MAX {
            return Err(CloudError::Rejected(format!(
                "command comment longer than {COMMENT_MAX} characters"
            )));
        }
        let out = self
            .client
            .send_command()
            .document_name(RUN_SHELL_SCRIPT)
            .instance_ids(instance_id)
            .parameters("commands", vec![script.to_string()])
            .parameters("executionTimeout", vec![timeout_seconds.to_string()])
            .comment(comment)
            .timeout_seconds(DELIVERY_TIMEOUT_SECONDS)
            .send()
            .await
            .map_err(|e| classify_sdk_error_redacted(&e))?;
        out.command()
            .and_then(|c| c.command_id())
            .map(str::to_string)
            .ok_or_else(|| CloudError::Other("SendCommand answered no command id".into()))
    }

    async fn sent(&self, instance_id: &str) -> Result<Vec<SentCommand>, CloudError> {
        let mut invocations = Vec::new();
        let mut pages = self
            .client
            .list_command_invocations()
            .instance_id(instance_id)
            .max_results(50)
            .into_paginator()
            .send();
        // Whole pages until SENT_LIMIT are read, then the newest SENT_LIMIT of them are kept.
        while invocations.len() < SENT_LIMIT {
            let Some(page) = pages.next().await else {
                break;
            };
            let out = page.map_err(|e| classify_sdk_error(&e))?;
            for inv in out.command_invocations() {
                if let Some(id) = inv.command_id() {
                    let when = inv
                        .requested_date_time()
                        .map(|t| (t.secs(), t.subsec_nanos()))
                        .unwrap_or_default();
                    invocations.push((
                        when,
                        SentCommand {
                            command_id: id.into(),
                            comment: inv.comment().unwrap_or_default().into(),
                            requested_at: inv.requested_date_time().map(|t| t.secs()),
                        },
                    ));
                }
            }
        }
        // Newest first, whatever order the service answered in (a stable sort keeps its order on ties).
        invocations.sort_by_key(|c| std::cmp::Reverse(c.0));
        invocations.truncate(SENT_LIMIT);
        Ok(invocations.into_iter().map(|(_, c)| c).collect())
    }

    async fn status(
        &self,
        command_id: &str,
        instance_id: &str,
    ) -> Result<CommandStatus, CloudError> {
        match self
            .client
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await
        {
            Ok(out) => Ok(command_status(
                out.status(),
                out.status_details(),
                out.response_code(),
                out.standard_output_content(),
                out.standard_error_content(),
            )),
            // Right after SendCommand the invocation may not be visible yet.
            Err(e) if e.code() == Some("InvocationDoesNotExist") => Ok(CommandStatus::Running),
            Err(e) => Err(classify_sdk_error(&e)),
        }
    }
}

#[async_trait]
impl Parameters for Ssm {
    async fn get(&self, name: &str) -> Result<Option<String>, CloudError> {
        self.get_parameter(name, false).await
    }

    async fn get_secret(&self, name: &str) -> Result<Option<String>, CloudError> {
        self.get_parameter(name, true).await
    }

    async fn put_secret(&self, name: &str, value: &str) -> Result<(), CloudError> {
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .set_key_id(self.secrets_key.clone())
            .overwrite(true)
            .tier(tier_for(value.len()))
            .send()
            .await
            .map_err(|e| classify_sdk_error_redacted(&e))?;
        Ok(())
    }

    async fn delete(&self, names: &[String]) -> Result<(), CloudError> {
        for chunk in names.chunks(DELETE_CHUNK) {
            // Missing names come back in `InvalidParameters`, which is fine.
            self.client
                .delete_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| classify_sdk_error(&e))?;
        }
        Ok(())
    }

    async fn list_under(&self, path: &str) -> Result<Vec<ParameterInfo>, CloudError> {
        // DescribeParameters answers metadata only; GetParametersByPath would answer values.
        let under = aws_sdk_ssm::types::ParameterStringFilter::builder()
            .key("Path")
            .option("Recursive")
            .values(path)
            .build()
            .map_err(|e| CloudError::Other(e.to_string()))?;
        // DescribeParameters has no item paginator: its pages, each with its parameters.
        let pages = self
            .client
            .describe_parameters()
            .parameter_filters(under)
            .max_results(DESCRIBE_PAGE)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify_sdk_error(&e))?;
        Ok(pages
            .iter()
            .flat_map(|page| page.parameters())
            .filter_map(|p| {
                Some(ParameterInfo {
                    name: p.name()?.to_string(),
                    last_modified: p.last_modified_date().map(|t| t.secs()),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_as_documented() {
        use CommandInvocationStatus as S;
        for s in [S::Pending, S::InProgress, S::Delayed, S::Cancelling] {
            assert_eq!(
                command_status(Some(&s), None, -1, None, None),
                CommandStatus::Running
            );
        }
        assert_eq!(
            command_status(Some(&S::Success), Some("Success"), 0, Some("out"), None),
            CommandStatus::Success {
                stdout: "out".into()
            }
        );
        assert_eq!(
            command_status(Some(&S::TimedOut), None, -1, None, None),
            CommandStatus::TimedOut
        );
        assert_eq!(
            command_status(Some(&S::Failed), Some("ExecutionTimedOut"), 124, None, None),
            CommandStatus::TimedOut
        );
        assert_eq!(
            command_status(
                Some(&S::Cancelled),
                Some("DeliveryTimedOut"),
                -1,
                None,
                None
            ),
            CommandStatus::TimedOut
        );
        assert_eq!(
            command_status(Some(&S::Failed), Some("Failed"), 2, Some("o"), Some("e")),
            CommandStatus::Failed {
                status: "Failed".into(),
                exit_code: 2,
                stdout: "o".into(),
                stderr: "e".into()
            }
        );
        assert_eq!(
            command_status(Some(&S::Cancelled), None, -1, None, None),
            CommandStatus::Failed {
                status: "Cancelled".into(),
                exit_code: -1,
                stdout: String::new(),
                stderr: String::new()
            }
        );
    }

    #[test]
    fn large_values_need_the_advanced_tier() {
        assert_eq!(tier_for(4096), ParameterTier::Standard);
        assert_eq!(tier_for(4097), ParameterTier::Advanced);
    }
}
