//! What mecctl prints: the API's JSON as JSON or YAML, or aligned tables for people — the cluster
//! list, one cluster (summary, nodes, latest events) and the event history.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::Format;

/// Renders `value` in a machine format, or with `table` for [`Format::Table`].
pub fn render(format: Format, value: &Value, table: impl FnOnce(&Value) -> String) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
        Format::Yaml => serde_yaml::to_string(value).unwrap_or_default(),
        Format::Table => table(value),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `42s`, `7m`, `3h`, `2d` since an RFC 3339 time.
pub fn age(since: &str, now: OffsetDateTime) -> String {
    let Ok(t) = OffsetDateTime::parse(since, &Rfc3339) else {
        return "-".into();
    };
    let s = (now - t).whole_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The zones of a cluster's nodes, once each, a Local or Wavelength zone with its type:
/// `us-east-1a, us-east-1-wl1-bos-wlz-1 (wavelength-zone)`.
fn zones(record: &Value) -> String {
    let mut seen: Vec<String> = Vec::new();
    for n in record["nodes"].as_array().into_iter().flatten() {
        let Some(zone) = n["zone"].as_str() else {
            continue;
        };
        let shown = match n["zone_type"].as_str() {
            Some(kind) if kind != "availability-zone" => format!("{zone} ({kind})"),
            _ => zone.to_string(),
        };
        if !seen.contains(&shown) {
            seen.push(shown);
        }
    }
    if seen.is_empty() {
        "-".into()
    } else {
        seen.join(", ")
    }
}

/// `GET /clusters` pages, merged: NAME ID STATUS STAGE NODES REGION ZONES AGE.
pub fn cluster_table(clusters: &Value, now: OffsetDateTime) -> String {
    let rows: Vec<Vec<String>> = clusters
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let nodes = c["nodes"].as_array().map(Vec::len).unwrap_or(0);
            let wanted = c["spec"]["control_planes"].as_u64().unwrap_or(0)
                + c["spec"]["workers"].as_u64().unwrap_or(0);
            vec![
                text(&c["spec"]["name"]),
                text(&c["id"]),
                text(&c["status"]),
                text(&c["stage"]),
                format!("{nodes}/{wanted}"),
                text(&c["spec"]["region"]),
                zones(c),
                age(c["created_at"].as_str().unwrap_or_default(), now),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "No clusters.\n".into();
    }
    table(
        &[
            "NAME", "ID", "STATUS", "STAGE", "NODES", "REGION", "ZONES", "AGE",
        ],
        &rows,
    )
}

/// One cluster: a summary, its nodes and (given) its latest events.
pub fn cluster_detail(record: &Value, events: &[Value], now: OffsetDateTime) -> String {
    let spec = &record["spec"];
    let mut out = format!(
        "Name:        {}\nID:          {}\nStatus:      {}\nStage:       {}\nRegion:      {}\n\
         Size:        {} control plane(s), {} worker(s), {}\nMicroK8s:    {} (add-ons: {})\n\
         Endpoint:    {}\nKubeconfig:  {}\nCreated:     {} ({} ago)\n",
        text(&spec["name"]),
        text(&record["id"]),
        text(&record["status"]),
        text(&record["stage"]),
        text(&spec["region"]),
        text(&spec["control_planes"]),
        text(&spec["workers"]),
        text(&spec["instance_type"]),
        text(&spec["microk8s_channel"]),
        spec["addons"]
            .as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "-".into()),
        text(&record["endpoint"]),
        match record["status"].as_str() {
            Some("ACTIVE") => format!("mecctl kubeconfig {}", text(&spec["name"])),
            _ => "- (once ACTIVE)".into(),
        },
        text(&record["created_at"]),
        age(record["created_at"].as_str().unwrap_or_default(), now),
    );
    let exposed: Vec<String> = spec["exposed_ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| serde_json::from_value::<mecplane::spec::ExposedPort>(p.clone()).ok())
        .map(|p| p.describe())
        .collect();
    if !exposed.is_empty() {
        out.push_str(&format!("Exposed:     {}\n", exposed.join("; ")));
    }
    if let Some(dns) = record["balancer"]["dns_name"].as_str() {
        out.push_str(&format!(
            "Balancer:    {dns} (network load balancer, TCP 16443)\n"
        ));
    }
    if let Some(sans) = spec["extra_sans"].as_array().filter(|s| !s.is_empty()) {
        let sans: Vec<String> = sans.iter().map(text).collect();
        out.push_str(&format!("Extra SANs:  {}\n", sans.join(", ")));
    }
    if let Some(level) = spec["pod_security"].as_str() {
        out.push_str(&format!(
            "PodSecurity: {level}, enforced outside the add-ons' namespaces\n"
        ));
    }
    if let Some(f) = record["failure"].as_object() {
        out.push_str(&format!(
            "Failure:     {} in {}: {}\n",
            text(&f["error"]),
            text(&f["stage"]),
            text(&f["reason"])
        ));
    }
    // A carrier IP column only when a node has one (Wavelength).
    let carrier = record["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|n| n["carrier_ip"].is_string());
    let nodes: Vec<Vec<String>> = record["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let mut row = vec![
                text(&n["role"]),
                text(&n["index"]),
                text(&n["instance_id"]),
                text(&n["private_ip"]),
                text(&n["public_ip"]),
            ];
            if carrier {
                row.push(text(&n["carrier_ip"]));
            }
            row.extend([text(&n["zone"]), text(&n["zone_type"]), text(&n["state"])]);
            row
        })
        .collect();
    if !nodes.is_empty() {
        let mut headers = vec!["ROLE", "INDEX", "INSTANCE", "PRIVATE-IP", "PUBLIC-IP"];
        if carrier {
            headers.push("CARRIER-IP");
        }
        headers.extend(["ZONE", "ZONE-TYPE", "STATE"]);
        out.push_str("\nNodes:\n");
        out.push_str(&indent(&table(&headers, &nodes)));
        if let Some(note) = root_volumes(record) {
            out.push_str(&indent(&format!("{note}\n")));
        }
    }
    if !events.is_empty() {
        out.push_str("\nLatest events:\n");
        let last = &events[events.len().saturating_sub(8)..];
        out.push_str(&indent(&event_table(last)));
    }
    out
}

/// A note under the nodes table when a node's root volume is not the usual gp3 (a Wavelength
/// zone offers gp2 only): `Root volumes: gp2 in us-east-1-wl1-bos-wlz-1; gp3 in us-east-1a`.
/// `None` when every node's is gp3 (or the record predates volume types).
fn root_volumes(record: &Value) -> Option<String> {
    let mut seen: Vec<(String, Vec<String>)> = Vec::new();
    for n in record["nodes"].as_array().into_iter().flatten() {
        let Some(volume) = n["volume_type"].as_str() else {
            continue;
        };
        let zone = n["zone"].as_str().unwrap_or("-").to_string();
        match seen.iter_mut().find(|(v, _)| v == volume) {
            Some((_, zones)) if zones.contains(&zone) => {}
            Some((_, zones)) => zones.push(zone),
            None => seen.push((volume.to_string(), vec![zone])),
        }
    }
    if seen.iter().all(|(v, _)| v == "gp3") {
        return None;
    }
    let parts: Vec<String> = seen
        .iter()
        .map(|(v, zones)| format!("{v} in {}", zones.join(", ")))
        .collect();
    Some(format!("Root volumes: {}", parts.join("; ")))
}

/// TIME STAGE PHASE DETAIL.
pub fn event_table(events: &[Value]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let time = e["time"].as_str().unwrap_or_default();
            vec![
                time.get(..19).unwrap_or(time).replace('T', " "),
                text(&e["stage"]),
                text(&e["phase"]),
                e["detail"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    table(&["TIME", "STAGE", "PHASE", "DETAIL"], &rows)
}

/// What an update changes, from its `params`: `workers 2 -> 4`.
pub fn update_change(update: &Value) -> String {
    let Some(params) = update["params"].as_object() else {
        return "-".into();
    };
    let mut parts: Vec<String> = params
        .iter()
        .map(|(field, v)| match (v.get("from"), v.get("to")) {
            (Some(from), Some(to)) => format!("{field} {} -> {}", text(from), text(to)),
            _ if field == "node" => format!(
                "replace {} {} ({})",
                text(&v["role"]),
                text(&v["index"]),
                text(&v["instance_id"])
            ),
            _ => format!("{field} {}", text(v)),
        })
        .collect();
    if parts.is_empty() {
        parts.push("-".into());
    }
    parts.join(", ")
}

/// `POST /reconcile`: what the run saw, then ACTION CLUSTER NODE DETAIL RESULT per planned action,
/// then what it reported instead of acting.
pub fn reconcile_report(report: &Value) -> String {
    let regions: Vec<String> = report["regions"]
        .as_array()
        .map(|r| r.iter().map(text).collect())
        .unwrap_or_default();
    let mut out = format!(
        "Reconcile{}: {} cluster record(s), {} instance(s) in {}; {} unhealthy node(s)\n",
        if report["dry_run"] == true {
            " (dry run)"
        } else {
            ""
        },
        text(&report["records"]),
        text(&report["instances"]),
        if regions.is_empty() {
            "no region".into()
        } else {
            regions.join(", ")
        },
        text(&report["plan"]["unhealthy_nodes"]),
    );
    let outcomes = report["outcomes"].as_array().cloned().unwrap_or_default();
    let actions = report["plan"]["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let result_of = |a: &Value| {
        outcomes
            .iter()
            .find(|o| {
                o["action"] == a["action"]
                    && o["cluster_id"] == a["cluster_id"]
                    && o["instance_id"] == a["instance_id"]
            })
            .map(|o| text(&o["result"]))
            .unwrap_or_else(|| {
                if report["dry_run"] == true {
                    "planned".into()
                } else {
                    "-".into()
                }
            })
    };
    if actions.is_empty() {
        out.push_str("Nothing to do.\n");
    } else {
        let rows: Vec<Vec<String>> = actions
            .iter()
            .map(|a| {
                let detail = a["reason"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| a["region"].as_str().map(|r| format!("in {r}")))
                    .unwrap_or_else(|| "-".into());
                vec![
                    text(&a["action"]),
                    text(&a["cluster_id"]),
                    a["instance_id"].as_str().unwrap_or("-").to_string(),
                    detail,
                    result_of(a),
                ]
            })
            .collect();
        out.push_str(&table(
            &["ACTION", "CLUSTER", "NODE", "DETAIL", "RESULT"],
            &rows,
        ));
    }
    for finding in report["plan"]["findings"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "reported, not acted on: {}: {}\n",
            text(&finding["cluster_id"]),
            text(&finding["what"])
        ));
    }
    out
}

/// `GET /clusters/{id}/updates`: ID KIND CHANGE STATUS STARTED FINISHED REASON, newest first.
pub fn update_table(updates: &[Value]) -> String {
    if updates.is_empty() {
        return "No updates.\n".into();
    }
    let time = |v: &Value| match v.as_str() {
        Some(t) => t.get(..19).unwrap_or(t).replace('T', " "),
        None => "-".into(),
    };
    let rows: Vec<Vec<String>> = updates
        .iter()
        .map(|u| {
            let f = &u["failure"];
            let reason = match f["reason"].as_str() {
                Some(reason) => format!("{}: {reason}", text(&f["error"])),
                None => "-".into(),
            };
            vec![
                text(&u["id"]),
                text(&u["kind"]),
                update_change(u),
                text(&u["status"]),
                time(&u["started_at"]),
                time(&u["finished_at"]),
                reason,
            ]
        })
        .collect();
    table(
        &[
            "ID", "KIND", "CHANGE", "STATUS", "STARTED", "FINISHED", "REASON",
        ],
        &rows,
    )
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn record() -> Value {
        json!({
            "id": "c-0123456789abcdef", "status": "ACTIVE", "stage": "activate",
            "spec": {"name": "edge", "region": "eu-west-1", "control_planes": 1, "workers": 2,
                     "instance_type": "t4g.medium", "microk8s_channel": "1.32/stable", "addons": ["dns"],
                     "exposed_ports": [{"port": "30000-32767", "protocol": "udp", "cidrs": ["10.0.0.0/8", "192.0.2.0/24"]}]},
            "nodes": [
                {"role": "control-plane", "index": 0, "instance_id": "i-1", "private_ip": "10.0.0.1", "public_ip": null, "zone": "eu-west-1a", "zone_type": "availability-zone", "state": "ready"},
                {"role": "worker", "index": 0, "instance_id": "i-2", "private_ip": "10.0.0.2", "public_ip": null, "state": "ready"}
            ],
            "failure": null, "endpoint": "https://10.0.0.1:16443",
            "created_at": "2026-11-23T10:00:00Z"
        })
    }

    #[test]
    fn tables_align_and_ages_read_well() {
        let now = datetime!(2026-11-23 10:05:00 UTC);
        let list = cluster_table(&json!([record()]), now);
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAME  ID                  STATUS"));
        assert!(
            lines[1].contains(
                "edge  c-0123456789abcdef  ACTIVE  activate  2/3    eu-west-1  eu-west-1a  5m"
            ),
            "{list}"
        );
        assert_eq!(cluster_table(&json!([]), now), "No clusters.\n");
        assert_eq!(age("2026-11-23T10:04:30Z", now), "30s");
        assert_eq!(age("2026-11-21T10:00:00Z", now), "2d");
        assert_eq!(age("yesterday", now), "-");
    }

    #[test]
    fn a_wavelength_cluster_shows_zone_types_and_carrier_ips() {
        let now = datetime!(2026-11-23 10:05:00 UTC);
        let mut r = record();
        r["nodes"] = json!([
            {"role": "control-plane", "index": 0, "instance_id": "i-1", "private_ip": "10.0.0.1", "public_ip": null,
             "carrier_ip": "155.146.0.7", "zone": "us-east-1-wl1-bos-wlz-1", "zone_type": "wavelength-zone", "state": "ready",
             "volume_type": "gp2"},
            {"role": "worker", "index": 0, "instance_id": "i-2", "private_ip": "10.0.0.2", "public_ip": "198.51.100.2",
             "zone": "us-east-1a", "zone_type": "availability-zone", "state": "ready", "volume_type": "gp3"}
        ]);
        let out = cluster_detail(&r, &[], now);
        // The gp2 fallback is a note under the table.
        assert!(
            out.contains("\n  Root volumes: gp2 in us-east-1-wl1-bos-wlz-1; gp3 in us-east-1a\n"),
            "{out}"
        );
        let mut standard = r.clone();
        standard["nodes"][0]["volume_type"] = json!("gp3");
        assert!(
            !cluster_detail(&standard, &[], now).contains("Root volumes"),
            "no note when every root is gp3"
        );
        assert!(
            out.contains("PUBLIC-IP     CARRIER-IP   ZONE                     ZONE-TYPE"),
            "{out}"
        );
        assert!(
            out.lines().any(|l| l.contains(
                "i-1       10.0.0.1    -             155.146.0.7  us-east-1-wl1-bos-wlz-1  wavelength-zone"
            )),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.contains("198.51.100.2  -            us-east-1a")),
            "{out}"
        );
        let list = cluster_table(&json!([r]), now);
        assert!(
            list.contains("us-east-1-wl1-bos-wlz-1 (wavelength-zone), us-east-1a"),
            "{list}"
        );
    }

    #[test]
    fn detail_shows_the_load_balancer_and_extra_sans_only_when_there() {
        let now = datetime!(2026-11-23 10:05:00 UTC);
        let plain = cluster_detail(&record(), &[], now);
        assert!(
            !plain.contains("Balancer:") && !plain.contains("Extra SANs:"),
            "{plain}"
        );
        let mut r = record();
        r["balancer"] = json!({"dns_name": "mecplane-c-1.elb.amazonaws.com", "load_balancer_arn": "a",
                               "listener_arn": "l", "target_group_arn": "t"});
        r["spec"]["extra_sans"] = json!(["k8s.edge.example"]);
        let out = cluster_detail(&r, &[], now);
        assert!(
            out.contains(
                "Balancer:    mecplane-c-1.elb.amazonaws.com (network load balancer, TCP 16443)"
            ),
            "{out}"
        );
        assert!(out.contains("Extra SANs:  k8s.edge.example"), "{out}");
        assert!(!plain.contains("PodSecurity:"), "{plain}");
        r["spec"]["pod_security"] = json!("baseline");
        let out = cluster_detail(&r, &[], now);
        assert!(
            out.contains("PodSecurity: baseline, enforced outside the add-ons' namespaces\n"),
            "{out}"
        );
    }

    #[test]
    fn detail_shows_nodes_failure_and_events() {
        let now = datetime!(2026-11-23 10:05:00 UTC);
        let mut r = record();
        let events = vec![
            json!({"time": "2026-11-23T10:01:00.123Z", "stage": "bootstrap", "phase": "finished", "detail": "MicroK8s 1.32/stable"}),
        ];
        let out = cluster_detail(&r, &events, now);
        assert!(out.contains("Status:      ACTIVE"));
        assert!(out.contains("Kubeconfig:  mecctl kubeconfig edge"));
        assert!(out.contains("control-plane  0      i-1"));
        assert!(
            out.lines()
                .any(|l| l.contains("i-1") && l.contains("eu-west-1a  availability-zone  ready")),
            "{out}"
        );
        assert!(
            !out.contains("CARRIER-IP"),
            "no carrier IP, no column: {out}"
        );
        assert!(
            out.contains("Exposed:     30000-32767/udp from 10.0.0.0/8, 192.0.2.0/24\n"),
            "{out}"
        );
        assert!(out.contains("2026-11-23 10:01:00  bootstrap  finished  MicroK8s 1.32/stable"));
        r["status"] = json!("FAILED");
        r["failure"] = json!({"stage": "bootstrap", "error": "CommandFailed", "reason": "exit 1"});
        let out = cluster_detail(&r, &[], now);
        assert!(out.contains("Failure:     CommandFailed in bootstrap: exit 1"));
    }

    #[test]
    fn updates_table_shows_the_change_and_the_reason() {
        let updates = vec![
            json!({"id": "u-2", "kind": "scale", "params": {"workers": {"from": 4, "to": 1}},
                   "status": "Failed", "started_at": "2026-11-23T10:10:00.5Z", "finished_at": "2026-11-23T10:12:00Z",
                   "failure": {"stage": "drain-workers", "error": "DrainTimedOut", "reason": "pods would not leave"}}),
            json!({"id": "u-1", "kind": "scale", "params": {"workers": {"from": 2, "to": 4}},
                   "status": "InProgress", "started_at": "2026-11-23T10:00:00Z", "finished_at": null, "failure": null}),
        ];
        let out = update_table(&updates);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("ID   KIND   CHANGE          STATUS      STARTED"),
            "{out}"
        );
        assert!(lines[1].contains("u-2  scale  workers 4 -> 1  Failed      2026-11-23 10:10:00  2026-11-23 10:12:00  DrainTimedOut: pods would not leave"), "{out}");
        assert!(
            lines[2].contains("u-1  scale  workers 2 -> 4  InProgress  2026-11-23 10:00:00  -"),
            "{out}"
        );
        assert_eq!(update_table(&[]), "No updates.\n");
        assert_eq!(update_change(&json!({"params": {}})), "-");
    }

    #[test]
    fn machine_formats_are_json_and_yaml() {
        let v = json!({"id": "c-1", "nodes": [{"role": "worker"}]});
        let json_out = render(Format::Json, &v, |_| unreachable!());
        assert_eq!(serde_json::from_str::<Value>(&json_out).unwrap(), v);
        let yaml_out = render(Format::Yaml, &v, |_| unreachable!());
        assert_eq!(serde_yaml::from_str::<Value>(&yaml_out).unwrap(), v);
        assert!(yaml_out.contains("id: c-1"));
    }
}
