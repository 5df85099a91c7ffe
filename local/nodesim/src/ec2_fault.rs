//! EC2 faults, answered as EC2's query protocol answers errors: `insufficient_capacity` on
//! `RunInstances`, `terminate_fails` on `TerminateInstances`.

use crate::agents::Agents;
use crate::faults::{parse_run_instances, parse_terminate_instances, FaultKind, Faults, Target};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// `Some(error)` when the body is a `RunInstances` call whose tags match an `insufficient_capacity` rule.
///
/// EC2 lists `InsufficientInstanceCapacity` among its server errors: HTTP 500 with the EC2 XML error
/// document (`Response/Errors/Error/{Code,Message}` and `RequestID`), which aws-sdk-ec2 parses into
/// the error code (and, with retries on, retries as a transient error).
pub fn run_instances_fault(faults: &Faults, form_body: &[u8]) -> Option<Response> {
    let tags = parse_run_instances(form_body)?;
    let cluster = tags.cluster_name.as_deref()?;
    let target = Target {
        cluster_name: Some(cluster),
        role: tags.role.as_deref(),
        index: None,
    };
    let hit = faults.all().iter().any(|r| {
        r.fault == FaultKind::InsufficientCapacity
            && r.matches_cluster(Some(cluster))
            && (r.role.is_none() || r.role.as_deref() == target.role)
    });
    if !hit {
        return None;
    }
    Some(ec2_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InsufficientInstanceCapacity",
        "We currently do not have sufficient capacity in the Availability Zone you requested. Our system will be working on provisioning additional capacity. You can currently get capacity by not specifying an Availability Zone in your request or choosing a different Availability Zone.",
    ))
}

/// `Some(error)` when the body is a `TerminateInstances` call naming an instance that a
/// `terminate_fails` rule matches (by the instance's tags, as the simulator last read them).
pub fn terminate_instances_fault(
    faults: &Faults,
    agents: &Agents,
    form_body: &[u8],
) -> Option<Response> {
    let ids = parse_terminate_instances(form_body)?;
    let hit = ids
        .iter()
        .filter_map(|id| agents.get(id))
        .any(|instance| faults.has(FaultKind::TerminateFails, &instance.target(), None));
    if !hit {
        return None;
    }
    // Worded as EC2 words it: the caller's ARN, the account id and an encoded message, none of
    // which may reach a record, the API or an execution history.
    Some(ec2_error(
        StatusCode::FORBIDDEN,
        "UnauthorizedOperation",
        &format!(
            "You are not authorized to perform this operation. User: \
             arn:aws:sts::123456789012:assumed-role/mecplane-terminate-nodes/mecplane-terminate-nodes \
             is not authorized to perform: ec2:TerminateInstances on resource: \
             arn:aws:ec2:us-east-1:123456789012:instance/{} because no identity-based policy allows \
             the ec2:TerminateInstances action. Encoded authorization failure message: {}",
            ids.first().map(String::as_str).unwrap_or("*"),
            uuid::Uuid::new_v4().simple()
        ),
    ))
}

/// EC2's XML error document (`Response/Errors/Error/{Code,Message}` and `RequestID`), which
/// aws-sdk-ec2 parses into the error code.
fn ec2_error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
    );
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    resp
}
