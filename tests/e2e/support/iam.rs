//! The roles of `infra/template.yaml` held against what the functions really called. The local
//! stack enforces no IAM; its gateway notes the IAM action of every AWS request a function makes
//! (`GET /_local/calls`), and [`missing_permissions`] names each one the function's own role does
//! not allow — the permission that would fail the same step on AWS.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use serde_yaml::Value as Yaml;

/// The actions each function's role allows, by function name (its `Handler`: the wiring of the
/// one binary it serves, and the name the local stack hosts it under).
pub fn allowed_actions(template: &str) -> BTreeMap<String, Vec<String>> {
    let doc: Yaml = serde_yaml::from_str(template).expect("infra/template.yaml parses");
    let resources = &doc["Resources"];
    let mut out = BTreeMap::new();
    for (_, resource) in resources.as_mapping().expect("Resources").iter() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let props = &resource["Properties"];
        let name = props["Handler"].as_str().expect("Handler");
        let role = untag(&props["Role"])
            .as_str()
            .and_then(|r| r.strip_suffix(".Arn"))
            .unwrap_or_else(|| panic!("{name}: Role is not !GetAtt <Role>.Arn"));
        let mut actions = Vec::new();
        for policy in resources[role]["Properties"]["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            for statement in policy["PolicyDocument"]["Statement"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                if statement["Effect"].as_str() != Some("Allow") {
                    continue;
                }
                match &statement["Action"] {
                    Yaml::String(a) => actions.push(a.clone()),
                    Yaml::Sequence(list) => {
                        actions.extend(list.iter().filter_map(|a| a.as_str().map(str::to_string)))
                    }
                    _ => {}
                }
            }
        }
        out.insert(name.to_string(), actions);
    }
    out
}

fn untag(value: &Yaml) -> &Yaml {
    match value {
        Yaml::Tagged(tagged) => &tagged.value,
        other => other,
    }
}

/// Whether an IAM action pattern (case-insensitive, `*` and `?` wildcards) matches an action.
fn matches(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match (p.first(), a.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], a) || (!a.is_empty() && go(p, &a[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &a[1..]),
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => go(&p[1..], &a[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

/// Every `function: action` the gateway saw that the function's role does not allow (or whose
/// function has no role in the template), sorted.
pub fn missing_permissions(template: &str, calls: &Value) -> Vec<String> {
    let allowed = allowed_actions(template);
    let mut missing = BTreeSet::new();
    for (function, actions) in calls.as_object().expect("calls by function") {
        let granted = allowed.get(function);
        for action in actions.as_array().into_iter().flatten() {
            let action = action.as_str().unwrap_or_default();
            let ok = granted.is_some_and(|g| g.iter().any(|p| matches(p, action)));
            if !ok {
                missing.insert(format!("{function}: {action}"));
            }
        }
    }
    missing.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TEMPLATE: &str = r#"
Resources:
  ARole:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyDocument:
            Statement:
              - Effect: Allow
                Action: [dynamodb:GetItem, "ec2:Describe*"]
                Resource: "*"
              - Effect: Deny
                Action: ssm:SendCommand
                Resource: "*"
  AFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: a
      Role: !GetAtt ARole.Arn
"#;

    #[test]
    fn names_each_call_the_role_does_not_allow() {
        let calls = json!({
            "a": ["dynamodb:GetItem", "ec2:DescribeInstances", "ssm:SendCommand"],
            "ghost": ["dynamodb:GetItem"],
        });
        assert_eq!(
            missing_permissions(TEMPLATE, &calls),
            vec!["a: ssm:SendCommand", "ghost: dynamodb:GetItem"]
        );
        assert!(missing_permissions(TEMPLATE, &json!({"a": ["DynamoDB:getitem"]})).is_empty());
    }
}
