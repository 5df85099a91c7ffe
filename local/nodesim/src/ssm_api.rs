//! The SSM Run Command operations in the JSON 1.1 protocol, as the aws-sdk-ssm client sends and
//! parses them: SendCommand, ListCommands, GetCommandInvocation, ListCommandInvocations,
//! DescribeInstanceInformation, CancelCommand. Errors are HTTP 400 with `{"__type", "message"}`.

use crate::commands::{self, CommandRec, Invocation, Status, PLUGIN_OUTPUT_LIMIT};
use crate::sandbox::truncate_chars;
use crate::Core;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The only document the simulator runs.
pub const RUN_SHELL_SCRIPT: &str = "AWS-RunShellScript";
/// The SSM agent version reported for every instance.
pub const AGENT_VERSION: &str = "3.3.1142.0";

/// An SSM error answer.
#[derive(Debug)]
pub struct ApiError {
    code: &'static str,
    message: String,
    status: StatusCode,
}

impl ApiError {
    /// A client error (HTTP 400).
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"__type": self.code, "message": self.message}).to_string();
        json_response(self.status, body)
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    resp.headers_mut().insert(
        "x-amzn-requestid",
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("uuid header"),
    );
    resp
}

/// Dispatches one request by its `X-Amz-Target`; `region` is the one it was signed for (only that
/// region's instances exist for it).
pub async fn handle(core: &Arc<Core>, target: &str, region: &str, body: &[u8]) -> Response {
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return ApiError::new("SerializationException", format!("invalid JSON body: {e}"))
                    .into_response()
            }
        }
    };
    let op = target.strip_prefix("AmazonSSM.").unwrap_or(target);
    let result = match op {
        "SendCommand" => send_command(core, region, &input).await,
        "ListCommands" => list_commands(core, &input),
        "GetCommandInvocation" => get_command_invocation(core, &input),
        "ListCommandInvocations" => list_command_invocations(core, &input),
        "DescribeInstanceInformation" => describe_instance_information(core, region, &input).await,
        "CancelCommand" => cancel_command(core, &input),
        _ => Err(ApiError::new(
            "UnknownOperationException",
            format!("the node simulator does not serve {target}"),
        )),
    };
    match result {
        Ok(v) => json_response(StatusCode::OK, v.to_string()),
        Err(e) => e.into_response(),
    }
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `2017-06-05T22:09:27.209Z`, the string form GetCommandInvocation uses.
fn iso(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&fmt).unwrap_or_default()
}

fn str_field<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str)
}

fn required<'a>(input: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    str_field(input, name).ok_or_else(|| {
        ApiError::new(
            "ValidationException",
            format!("1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null", lower_first(name)),
        )
    })
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn refresh(core: &Arc<Core>) -> Result<(), ApiError> {
    core.refresh_instances().await.map_err(|e| ApiError {
        code: "InternalServerError",
        message: e,
        status: StatusCode::INTERNAL_SERVER_ERROR,
    })
}

async fn send_command(core: &Arc<Core>, region: &str, input: &Value) -> Result<Value, ApiError> {
    let document = required(input, "DocumentName")?;
    if document != RUN_SHELL_SCRIPT {
        return Err(ApiError::new("InvalidDocument", format!("Document {document} does not exist (the node simulator runs AWS-RunShellScript only)")));
    }
    if input
        .get("Targets")
        .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()))
    {
        return Err(ApiError::new(
            "InvalidParameters",
            "the node simulator supports InstanceIds, not Targets",
        ));
    }
    let instance_ids = string_list(input.get("InstanceIds"));
    if instance_ids.is_empty() {
        return Err(ApiError::new(
            "InvalidParameters",
            "InstanceIds or Targets must be specified",
        ));
    }
    if instance_ids.len() > 50 {
        return Err(ApiError::new(
            "ValidationException",
            "1 validation error detected: Value at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to 50",
        ));
    }
    let params = input
        .get("Parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in &params {
        if !matches!(
            k.as_str(),
            "commands" | "executionTimeout" | "workingDirectory"
        ) || !v.is_array()
        {
            return Err(ApiError::new(
                "InvalidParameters",
                format!("Parameter \"{k}\" is not valid for document AWS-RunShellScript"),
            ));
        }
    }
    let lines = string_list(params.get("commands"));
    if lines.is_empty() {
        return Err(ApiError::new(
            "InvalidParameters",
            "Parameters \"commands\" are required for document AWS-RunShellScript",
        ));
    }
    let execution_timeout = match string_list(params.get("executionTimeout")).first() {
        None => 3600,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if (1..=172_800).contains(&n) => n,
            _ => return Err(ApiError::new("InvalidParameters", format!("Parameter executionTimeout value {s} is not valid: it must be an integer between 1 and 172800"))),
        },
    };
    let timeout_seconds = match input.get("TimeoutSeconds").and_then(Value::as_i64) {
        None => 3600,
        Some(n) if (30..=2_592_000).contains(&n) => n as u64,
        Some(n) => return Err(ApiError::new("ValidationException", format!("1 validation error detected: Value '{n}' at 'timeoutSeconds' failed to satisfy constraint: Member must have value between 30 and 2592000"))),
    };
    refresh(core).await?;
    let now = SystemTime::now();
    for id in &instance_ids {
        let online = core.agents.get(id).is_some_and(|i| {
            i.region == region && i.agent_online(now, core.cfg.agent_delay, &core.faults)
        });
        if !online {
            return Err(ApiError::new(
                "InvalidInstanceId",
                "Instances not in a valid state for account",
            ));
        }
    }
    for id in &instance_ids {
        core.agents.mark_seen_online(id, now);
    }
    let text = lines.join("\n");
    let mut parameters = params.clone();
    parameters
        .entry("executionTimeout")
        .or_insert_with(|| json!([execution_timeout.to_string()]));
    parameters
        .entry("workingDirectory")
        .or_insert_with(|| json!([""]));
    let cmd = CommandRec {
        command_id: uuid::Uuid::new_v4().to_string(),
        document_name: document.to_string(),
        comment: str_field(input, "Comment").unwrap_or_default().to_string(),
        parameters,
        instance_ids: instance_ids.clone(),
        requested: now,
        timeout_seconds,
        execution_timeout,
        script: commands::script_name(&text),
        text,
    };
    core.commands.insert(cmd.clone());
    for id in &instance_ids {
        tokio::spawn(commands::run_invocation(
            core.clone(),
            cmd.clone(),
            id.clone(),
        ));
    }
    Ok(json!({ "Command": command_json(core, &cmd) }))
}

fn command_json(core: &Core, cmd: &CommandRec) -> Value {
    let invs: Vec<Invocation> = cmd
        .instance_ids
        .iter()
        .filter_map(|i| core.commands.invocation(&cmd.command_id, i))
        .collect();
    let completed = invs.iter().filter(|v| v.status.is_terminal()).count();
    let errors = invs
        .iter()
        .filter(|v| matches!(v.status, Status::Failed | Status::TimedOut))
        .count();
    let (status, details) = if invs.iter().all(|v| v.status == Status::Pending) {
        ("Pending", "Pending")
    } else if completed < invs.len() {
        ("InProgress", "InProgress")
    } else if invs.iter().all(|v| v.status == Status::Success) {
        ("Success", "Success")
    } else if invs.iter().any(|v| v.status == Status::Cancelled) {
        ("Cancelled", "Cancelled")
    } else if invs.iter().all(|v| v.status == Status::TimedOut) {
        ("TimedOut", invs[0].details)
    } else {
        ("Failed", "Failed")
    };
    json!({
        "CommandId": cmd.command_id,
        "DocumentName": cmd.document_name,
        "DocumentVersion": "$DEFAULT",
        "Comment": cmd.comment,
        "ExpiresAfter": epoch(cmd.requested + Duration::from_secs(cmd.timeout_seconds + cmd.execution_timeout)),
        "Parameters": Value::Object(cmd.parameters.clone()),
        "InstanceIds": cmd.instance_ids,
        "Targets": [],
        "RequestedDateTime": epoch(cmd.requested),
        "Status": status,
        "StatusDetails": details,
        "OutputS3Region": core.cfg.region,
        "OutputS3BucketName": "",
        "OutputS3KeyPrefix": "",
        "MaxConcurrency": "50",
        "MaxErrors": "0",
        "TargetCount": cmd.instance_ids.len(),
        "CompletedCount": completed,
        "ErrorCount": errors,
        "DeliveryTimedOutCount": invs.iter().filter(|v| v.details == "DeliveryTimedOut").count(),
        "ServiceRole": "",
        "NotificationConfig": {"NotificationArn": "", "NotificationEvents": [], "NotificationType": ""},
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false},
        "TimeoutSeconds": cmd.timeout_seconds,
    })
}

fn get_command_invocation(core: &Arc<Core>, input: &Value) -> Result<Value, ApiError> {
    let command_id = required(input, "CommandId")?;
    let instance_id = required(input, "InstanceId")?;
    if let Some(plugin) = str_field(input, "PluginName") {
        if plugin != "aws:runShellScript" {
            return Err(ApiError::new(
                "InvalidPluginName",
                "The plugin name isn't valid.",
            ));
        }
    }
    let (Some(cmd), Some(inv)) = (
        core.commands.command(command_id),
        core.commands.invocation(command_id, instance_id),
    ) else {
        return Err(ApiError::new("InvocationDoesNotExist", ""));
    };
    let elapsed = match (inv.start, inv.end) {
        (Some(s), Some(e)) => e.duration_since(s).unwrap_or_default(),
        (Some(s), None) => SystemTime::now().duration_since(s).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    Ok(json!({
        "CommandId": cmd.command_id,
        "InstanceId": instance_id,
        "Comment": cmd.comment,
        "DocumentName": cmd.document_name,
        "DocumentVersion": "$DEFAULT",
        "PluginName": "aws:runShellScript",
        "ResponseCode": inv.response_code,
        "ExecutionStartDateTime": inv.start.map(iso).unwrap_or_default(),
        "ExecutionElapsedTime": format!("PT{:.3}S", elapsed.as_secs_f64()),
        "ExecutionEndDateTime": inv.end.map(iso).unwrap_or_default(),
        "Status": inv.status.as_str(),
        "StatusDetails": inv.details,
        "StandardOutputContent": inv.stdout,
        "StandardOutputUrl": "",
        "StandardErrorContent": inv.stderr,
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false},
    }))
}

fn plugin_output(inv: &Invocation) -> String {
    let mut out = inv.stdout.clone();
    if !inv.stderr.is_empty() {
        out.push_str("\n----------ERROR-------\n");
        out.push_str(&inv.stderr);
    }
    truncate_chars(&out, PLUGIN_OUTPUT_LIMIT)
}

fn invocation_json(
    core: &Core,
    cmd: &CommandRec,
    instance_id: &str,
    inv: &Invocation,
    details: bool,
) -> Value {
    let mut v = json!({
        "CommandId": cmd.command_id,
        "InstanceId": instance_id,
        "InstanceName": core.agents.get(instance_id).map(|i| i.hostname).unwrap_or_default(),
        "Comment": cmd.comment,
        "DocumentName": cmd.document_name,
        "DocumentVersion": "$DEFAULT",
        "RequestedDateTime": epoch(cmd.requested),
        "Status": inv.status.as_str(),
        "StatusDetails": inv.details,
        "TraceOutput": "",
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CommandPlugins": [],
        "ServiceRole": "",
        "NotificationConfig": {"NotificationArn": "", "NotificationEvents": [], "NotificationType": ""},
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false},
    });
    if details {
        let mut plugin = Map::new();
        plugin.insert("Name".into(), json!("aws:runShellScript"));
        plugin.insert("Status".into(), json!(inv.status.as_str()));
        plugin.insert("StatusDetails".into(), json!(inv.details));
        plugin.insert("ResponseCode".into(), json!(inv.response_code));
        if let Some(s) = inv.start {
            plugin.insert("ResponseStartDateTime".into(), json!(epoch(s)));
        }
        if let Some(e) = inv.end {
            plugin.insert("ResponseFinishDateTime".into(), json!(epoch(e)));
        }
        plugin.insert("Output".into(), json!(plugin_output(inv)));
        plugin.insert("StandardOutputUrl".into(), json!(""));
        plugin.insert("StandardErrorUrl".into(), json!(""));
        plugin.insert("OutputS3Region".into(), json!(core.cfg.region));
        plugin.insert("OutputS3BucketName".into(), json!(""));
        plugin.insert("OutputS3KeyPrefix".into(), json!(""));
        v["CommandPlugins"] = json!([Value::Object(plugin)]);
    }
    v
}

/// Applies `MaxResults` / `NextToken` (an offset) to a list.
fn paginate(
    items: Vec<Value>,
    input: &Value,
    default_max: usize,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let start = match str_field(input, "NextToken") {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ApiError::new("InvalidNextToken", "The specified token isn't valid."))?,
    };
    let max = input
        .get("MaxResults")
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .unwrap_or(default_max)
        .max(1);
    let end = (start + max).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((
        items
            .into_iter()
            .skip(start)
            .take(end.saturating_sub(start))
            .collect(),
        next,
    ))
}

/// ListCommands: every command with its parameters (the whole script text, environment
/// included), as SSM shows them for 30 days to anyone allowed `ssm:ListCommands` (which cannot be
/// scoped to resources). Newest first, pages of at most 50.
fn list_commands(core: &Arc<Core>, input: &Value) -> Result<Value, ApiError> {
    let command_id = str_field(input, "CommandId");
    let instance_id = str_field(input, "InstanceId");
    if input
        .get("Filters")
        .is_some_and(|f| f.as_array().is_some_and(|a| !a.is_empty()))
    {
        return Err(ApiError::new(
            "InvalidFilterKey",
            "the node simulator does not filter ListCommands",
        ));
    }
    if let Some(c) = command_id {
        if core.commands.command(c).is_none() {
            return Err(ApiError::new("InvalidCommandId", ""));
        }
    }
    if input
        .get("MaxResults")
        .and_then(Value::as_u64)
        .is_some_and(|n| !(1..=50).contains(&n))
    {
        return Err(ApiError::new(
            "ValidationException",
            "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 50",
        ));
    }
    // Newest first, as `all_commands` lists them.
    let commands: Vec<CommandRec> = core
        .commands
        .all_commands()
        .into_iter()
        .filter(|c| command_id.is_none_or(|id| id == c.command_id))
        .filter(|c| instance_id.is_none_or(|id| c.instance_ids.iter().any(|i| i == id)))
        .collect();
    let items = commands.iter().map(|c| command_json(core, c)).collect();
    let (page, next) = paginate(items, input, 50)?;
    let mut out = json!({ "Commands": page });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

fn list_command_invocations(core: &Arc<Core>, input: &Value) -> Result<Value, ApiError> {
    let command_id = str_field(input, "CommandId");
    let instance_id = str_field(input, "InstanceId");
    let details = input
        .get("Details")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(c) = command_id {
        if core.commands.command(c).is_none() {
            return Err(ApiError::new("InvalidCommandId", ""));
        }
    }
    let mut items = Vec::new();
    for cmd in core.commands.all_commands() {
        if command_id.is_some_and(|c| c != cmd.command_id) {
            continue;
        }
        for id in &cmd.instance_ids {
            if instance_id.is_some_and(|i| i != id) {
                continue;
            }
            if let Some(inv) = core.commands.invocation(&cmd.command_id, id) {
                items.push(invocation_json(core, &cmd, id, &inv, details));
            }
        }
    }
    let (page, next) = paginate(items, input, 50)?;
    let mut out = json!({ "CommandInvocations": page });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

async fn describe_instance_information(
    core: &Arc<Core>,
    region: &str,
    input: &Value,
) -> Result<Value, ApiError> {
    // Filters: [{Key, Values}]; InstanceInformationFilterList: [{key, valueSet}].
    let mut filters: Vec<(String, Vec<String>)> = Vec::new();
    for f in input
        .get("Filters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        filters.push((
            str_field(f, "Key").unwrap_or_default().to_string(),
            string_list(f.get("Values")),
        ));
    }
    for f in input
        .get("InstanceInformationFilterList")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        filters.push((
            str_field(f, "key").unwrap_or_default().to_string(),
            string_list(f.get("valueSet")),
        ));
    }
    for (k, _) in &filters {
        let ok = matches!(
            k.as_str(),
            "InstanceIds" | "PingStatus" | "PlatformTypes" | "ResourceType"
        ) || k.starts_with("tag:");
        if !ok {
            return Err(ApiError::new(
                "InvalidInstanceInformationFilterValue",
                format!("filter key {k} is not supported by the node simulator"),
            ));
        }
    }
    refresh(core).await?;
    let now = SystemTime::now();
    let mut items = Vec::new();
    for inst in core.agents.all() {
        if inst.state == "terminated" || inst.region != region {
            continue;
        }
        let online = inst.agent_online(now, core.cfg.agent_delay, &core.faults);
        if online {
            core.agents.mark_seen_online(&inst.instance_id, now);
        } else if !inst.ever_online {
            continue; // an agent that never registered is not a managed node yet
        }
        let ping = if online { "Online" } else { "ConnectionLost" };
        let tag_value = |key: &str| match key {
            "mecplane:cluster-name" => inst.cluster_name.clone(),
            "mecplane:cluster" => inst.cluster_id.clone(),
            "mecplane:role" => inst.role.clone(),
            "mecplane:index" => inst.index.map(|i| i.to_string()),
            _ => None,
        };
        let keep = filters.iter().all(|(k, vals)| match k.as_str() {
            "InstanceIds" => vals.contains(&inst.instance_id),
            "PingStatus" => vals.iter().any(|v| v == ping),
            "PlatformTypes" => vals.iter().any(|v| v == "Linux"),
            "ResourceType" => vals.iter().any(|v| v == "EC2Instance"),
            tag => tag_value(&tag["tag:".len()..]).is_some_and(|v| vals.contains(&v)),
        });
        if !keep {
            continue;
        }
        items.push(json!({
            "InstanceId": inst.instance_id,
            "PingStatus": ping,
            // An agent not online last pinged when it was last seen online.
            "LastPingDateTime": epoch(if online { now } else { inst.last_ping.unwrap_or(now) }),
            "AgentVersion": AGENT_VERSION,
            "IsLatestVersion": true,
            "PlatformType": "Linux",
            "PlatformName": "Ubuntu",
            "PlatformVersion": "24.04",
            "ResourceType": "EC2Instance",
            "IPAddress": inst.private_ip,
            "ComputerName": inst.hostname,
            "AssociationStatus": "Success",
            "SourceId": inst.instance_id,
            "SourceType": "AWS::EC2::Instance",
        }));
    }
    let (page, next) = paginate(items, input, 50)?;
    let mut out = json!({ "InstanceInformationList": page });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

fn cancel_command(core: &Arc<Core>, input: &Value) -> Result<Value, ApiError> {
    let command_id = required(input, "CommandId")?;
    if core.commands.command(command_id).is_none() {
        return Err(ApiError::new("InvalidCommandId", ""));
    }
    core.commands
        .cancel(command_id, &string_list(input.get("InstanceIds")));
    Ok(json!({}))
}
