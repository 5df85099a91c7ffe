//! What each subcommand does against the API, and what it prints: results on stdout (as
//! `--output` asks), progress and errors on stderr.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mecplane::spec::{ClusterRequest, ExposedPort, PortValue};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::cli::{
    AddonsArgs, ClusterArg, CreateArgs, DeleteArgs, ExposeArgs, Format, KubeconfigArgs, ListArgs,
    ReconcileArgs, ReplaceNodeArgs, ScaleArgs, UpgradeArgs, WaitArgs, WaitFlags,
};
use crate::client::{encode, ApiClient, Reply};
use crate::exit::{self, Failure};
use crate::{kubeconfig, output};

/// How often a wait polls the API.
const POLL: Duration = Duration::from_secs(2);
/// How many polls in a row may go unanswered (network error, 429, 5xx) before following gives up.
const FOLLOW_MISSES: u32 = 5;

pub struct Ctx {
    pub api: ApiClient,
    pub format: Format,
}

impl Ctx {
    /// A call that must answer `ok`; anything else is the matching [`Failure`].
    async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        ok: u16,
    ) -> Result<Value, Failure> {
        let (status, value) = self.api.call(method, path, body, headers).await?;
        if status == ok {
            Ok(value)
        } else {
            Err(Failure::from_answer(status, &value))
        }
    }

    fn print(&self, value: &Value, table: impl FnOnce(&Value) -> String) {
        print!("{}", output::render(self.format, value, table));
    }
}

fn cluster_path(cluster: &str) -> String {
    format!("/clusters/{}", encode(cluster))
}

/// The request body: the file's spec (if any) with the flags on top.
pub fn create_request(args: &CreateArgs) -> Result<ClusterRequest, Failure> {
    let mut req: ClusterRequest = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
            serde_json::from_str(&text).map_err(|e| {
                Failure::new(
                    exit::INVALID,
                    format!("{}: not a cluster spec: {e}", path.display()),
                )
            })?
        }
        None => ClusterRequest::default(),
    };
    macro_rules! set {
        ($field:ident, $value:expr) => {
            if let Some(v) = $value {
                req.$field = Some(v);
            }
        };
    }
    set!(name, args.name.clone().or_else(|| args.name_arg.clone()));
    set!(region, args.region.clone());
    set!(control_planes, args.control_planes);
    set!(workers, args.workers);
    set!(instance_type, args.instance_type.clone());
    set!(microk8s_channel, args.channel.clone());
    set!(ubuntu_release, args.ubuntu_release.clone());
    set!(subnet_id, args.subnet_id.clone());
    set!(root_volume_gib, args.root_volume_gib);
    set!(ami_id, args.ami_id.clone());
    set!(api_endpoint, args.api_endpoint.clone());
    set!(pod_security, args.pod_security.clone());
    if !args.extra_sans.is_empty() {
        req.extra_sans = Some(args.extra_sans.clone());
    }
    if !args.addons.is_empty() {
        req.addons = Some(args.addons.clone());
    }
    if !args.subnets.is_empty() {
        req.subnet_ids = Some(args.subnets.clone());
    }
    if !args.worker_subnets.is_empty() {
        req.worker_subnet_ids = Some(args.worker_subnets.clone());
    }
    if !args.api_allowed_cidrs.is_empty() {
        req.api_allowed_cidrs = Some(args.api_allowed_cidrs.clone());
    }
    if args.allow_api_from_anywhere {
        req.allow_api_from_anywhere = Some(true);
    }
    if !args.exposed_ports.is_empty() {
        let mut ports = args.exposed_ports.clone();
        for p in &mut ports {
            p.allow_anywhere = args.expose_anywhere && p.cidrs.iter().any(|c| c.ends_with("/0"));
        }
        req.exposed_ports = Some(ports);
    }
    if !args.tags.is_empty() {
        let tags: BTreeMap<String, String> = args.tags.iter().cloned().collect();
        req.tags.get_or_insert_with(BTreeMap::new).extend(tags);
    }
    if args.retain_on_failure {
        req.retain_on_failure = Some(true);
    }
    Ok(req)
}

/// The body `create` sends: the request of the file and flags, or, with `--from-tf-vars`, the
/// blueprint's variables in the environment with the flags on top.
pub fn create_body(
    args: &CreateArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, Failure> {
    let request =
        serde_json::to_value(create_request(args)?).map_err(|e| Failure::other(e.to_string()))?;
    if !args.from_tf_vars {
        return Ok(request);
    }
    crate::tfvars::spec_from_tf_vars(env, &request).map_err(|m| Failure::new(exit::USAGE, m))
}

/// `create --dry-run`: the body, printed, nothing sent (no endpoint needed).
pub fn create_dry_run(args: &CreateArgs) -> Result<(), Failure> {
    let body = create_body(args, &|k| std::env::var(k).ok())?;
    println!("{}", pretty(&body));
    Ok(())
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

pub async fn create(ctx: &Ctx, args: &CreateArgs) -> Result<(), Failure> {
    let body = create_body(args, &|k| std::env::var(k).ok())?;
    if args.from_tf_vars {
        eprintln!("the spec from TF_VAR_*:\n{}", pretty(&body));
    }
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let record = ctx
        .expect(
            "POST",
            "/clusters",
            Some(&body),
            &[("idempotency-key", &key)],
            202,
        )
        .await?;
    accepted(ctx, &record, &args.wait, Accepted::Create).await
}

/// What a `202` answered: a create or a delete under way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Accepted {
    Create,
    Delete,
}

/// The cluster's id and name from its record.
fn id_and_name(record: &Value) -> (String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&record["id"]), s(&record["spec"]["name"]))
}

/// After a `202`: prints the record (or, with `--wait`, follows the cluster until it settles).
async fn accepted(
    ctx: &Ctx,
    record: &Value,
    flags: &WaitFlags,
    what: Accepted,
) -> Result<(), Failure> {
    let (id, name) = id_and_name(record);
    if !flags.wait {
        ctx.print(record, |r| {
            format!(
                "cluster {name} ({id}) {}: follow it with `mecctl wait {id}`\n",
                r["status"].as_str().unwrap_or_default()
            )
        });
        return Ok(());
    }
    let (doing, until) = match what {
        Accepted::Create => ("creating", "ACTIVE"),
        Accepted::Delete => ("deleting", "DELETED"),
    };
    eprintln!("cluster {name} ({id}) {doing} (Ctrl-C stops waiting, not the cluster)");
    follow(ctx, &id, &name, &[until], flags, what == Accepted::Delete).await
}

pub async fn list(ctx: &Ctx, args: &ListArgs) -> Result<(), Failure> {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut query = vec![format!("max_results={}", args.page_size)];
        if let Some(s) = &args.status {
            query.push(format!("status={}", encode(&s.to_ascii_uppercase())));
        }
        if let Some(r) = &args.region {
            query.push(format!("region={}", encode(r)));
        }
        if let Some(t) = &token {
            query.push(format!("next_token={}", encode(t)));
        }
        let page = ctx
            .expect(
                "GET",
                &format!("/clusters?{}", query.join("&")),
                None,
                &[],
                200,
            )
            .await?;
        all.extend(page["clusters"].as_array().cloned().unwrap_or_default());
        match page["next_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    let now = OffsetDateTime::now_utc();
    ctx.print(&json!({ "clusters": all }), |v| {
        output::cluster_table(&v["clusters"], now)
    });
    Ok(())
}

pub async fn get(ctx: &Ctx, args: &ClusterArg) -> Result<(), Failure> {
    let record = ctx
        .expect("GET", &cluster_path(&args.cluster), None, &[], 200)
        .await?;
    let events = if ctx.format == Format::Table {
        events_of(ctx, &args.cluster).await?
    } else {
        Vec::new()
    };
    let now = OffsetDateTime::now_utc();
    ctx.print(&record, |r| output::cluster_detail(r, &events, now));
    Ok(())
}

async fn events_of(ctx: &Ctx, cluster: &str) -> Result<Vec<Value>, Failure> {
    let answer = ctx
        .expect(
            "GET",
            &format!("{}/events", cluster_path(cluster)),
            None,
            &[],
            200,
        )
        .await?;
    Ok(answer["events"].as_array().cloned().unwrap_or_default())
}

pub async fn events(ctx: &Ctx, args: &ClusterArg) -> Result<(), Failure> {
    let list = events_of(ctx, &args.cluster).await?;
    ctx.print(&json!({ "events": list }), |v| {
        output::event_table(v["events"].as_array().map(Vec::as_slice).unwrap_or(&[]))
    });
    Ok(())
}

pub async fn delete(ctx: &Ctx, args: &DeleteArgs) -> Result<(), Failure> {
    let record = ctx
        .expect("DELETE", &cluster_path(&args.cluster), None, &[], 202)
        .await?;
    accepted(ctx, &record, &args.wait, Accepted::Delete).await
}

/// `PATCH /clusters/{cluster}` with `body`, `If-Match: tag` when given.
async fn patch(
    ctx: &Ctx,
    cluster: &str,
    body: &Value,
    tag: Option<&str>,
) -> Result<Reply, Failure> {
    ctx.api
        .call_with_headers("PATCH", &cluster_path(cluster), Some(body), &if_match(tag))
        .await
}

/// `PATCH /clusters/{id}` with `{"workers": N}`: prints the record (`200`: nothing to change), or
/// the update started (`202`), or with `--wait` follows it until it ends.
pub async fn scale(ctx: &Ctx, args: &ScaleArgs) -> Result<(), Failure> {
    let body = json!({ "workers": args.workers });
    let tag = args.if_version.map(version_tag);
    let reply = patch(ctx, &args.cluster, &body, tag.as_deref()).await?;
    update_answer(ctx, &reply, &args.wait, |name, id| {
        format!(
            "cluster {name} ({id}) already has {} worker(s): nothing to change\n",
            args.workers
        )
    })
    .await
}

/// `PATCH /clusters/{id}` with `{"microk8s_channel": C}`: answered and followed as [`scale`] is.
pub async fn upgrade(ctx: &Ctx, args: &UpgradeArgs) -> Result<(), Failure> {
    let mut body = json!({ "microk8s_channel": args.channel });
    if let Some(n) = args.max_unavailable {
        body["max_unavailable"] = n.into();
    }
    let tag = args.if_version.map(version_tag);
    let reply = patch(ctx, &args.cluster, &body, tag.as_deref()).await?;
    update_answer(ctx, &reply, &args.wait, |name, id| {
        format!(
            "cluster {name} ({id}) already runs MicroK8s {}: nothing to change\n",
            args.channel
        )
    })
    .await
}

/// The add-on list a cluster gets from `current` with `enable` and `disable` applied: every entry
/// whose name (what comes before the first `:`) is disabled goes, then each enabled one replaces
/// the entry of the same name or is added at the end; the order stays otherwise. A name both
/// enabled and disabled, or enabled twice, is an error.
pub fn addons_after(
    current: &[String],
    enable: &[String],
    disable: &[String],
) -> Result<Vec<String>, String> {
    check_addon_flags(enable, disable)?;
    let mut next: Vec<String> = current
        .iter()
        .filter(|a| !disable.iter().any(|d| d == addon_name(a)))
        .cloned()
        .collect();
    for addon in enable {
        match next.iter_mut().find(|a| addon_name(a) == addon_name(addon)) {
            Some(entry) => entry.clone_from(addon),
            None => next.push(addon.clone()),
        }
    }
    Ok(next)
}

/// The add-on's name: what comes before the first `:`.
fn addon_name(addon: &str) -> &str {
    mecplane::microk8s::addon_name(addon)
}

/// The flags alone: no name both enabled and disabled, none enabled twice.
fn check_addon_flags(enable: &[String], disable: &[String]) -> Result<(), String> {
    for (i, addon) in enable.iter().enumerate() {
        let name = addon_name(addon);
        if disable.iter().any(|d| d == name) {
            return Err(format!("'{name}' is both enabled and disabled"));
        }
        if enable[..i].iter().any(|a| addon_name(a) == name) {
            return Err(format!("'{name}' is enabled twice"));
        }
    }
    Ok(())
}

/// Reads the cluster's add-ons, works out the new list (see [`addons_after`]) and, unless it is
/// the same, `PATCH /clusters/{id}` with `{"addons": [...]}` (see [`patch_list`]).
pub async fn addons(ctx: &Ctx, args: &AddonsArgs) -> Result<(), Failure> {
    check_addon_flags(&args.enable, &args.disable).map_err(|m| Failure::new(exit::USAGE, m))?;
    let list = |l: &[String]| {
        if l.is_empty() {
            "none".to_string()
        } else {
            l.join(", ")
        }
    };
    patch_list(
        ctx,
        &args.cluster,
        args.if_version,
        &args.wait,
        "addons",
        |record| {
            let current: Vec<String> = spec_list(record, "addons")?;
            let next = addons_after(&current, &args.enable, &args.disable)?;
            Ok(Listed {
                unchanged: next == current,
                summary: format!("add-ons {}", list(&next)),
                next: json!(next),
            })
        },
    )
    .await
}

/// A list of the record's spec (none when the record has no such field).
fn spec_list<T: serde::de::DeserializeOwned>(
    record: &Value,
    field: &str,
) -> Result<Vec<T>, String> {
    match &record["spec"][field] {
        Value::Null => Ok(Vec::new()),
        v => serde_json::from_value(v.clone()).map_err(|e| format!("the record's {field}: {e}")),
    }
}

/// The list a `mecctl addons` or `mecctl expose` wants, worked out from the record read.
struct Listed {
    next: Value,
    unchanged: bool,
    /// `add-ons dns, ingress`: what the cluster has once it is done.
    summary: String,
}

/// Reads the cluster, works out the whole new list of `field` from it and, unless it is the
/// same, `PATCH /clusters/{id}` with `{field: [...]}` conditional on the version read (or
/// `--if-version`), answered and followed as [`scale`] is.
async fn patch_list(
    ctx: &Ctx,
    cluster: &str,
    if_version: Option<u64>,
    wait: &WaitFlags,
    field: &str,
    next_of: impl FnOnce(&Value) -> Result<Listed, String>,
) -> Result<(), Failure> {
    let read = ctx
        .api
        .call_with_headers("GET", &cluster_path(cluster), None, &[])
        .await?;
    if read.status != 200 {
        return Err(Failure::from_answer(read.status, &read.body));
    }
    let record = &read.body;
    let (id, name) = id_and_name(record);
    let listed = next_of(record).map_err(|m| Failure::new(exit::USAGE, m))?;
    let unchanged = |name: &str, id: &str| {
        format!(
            "cluster {name} ({id}) already has {}: nothing to change\n",
            listed.summary
        )
    };
    if listed.unchanged {
        ctx.print(record, |_| unchanged(&name, &id));
        return Ok(());
    }
    let tag = match if_version {
        Some(v) => Some(version_tag(v)),
        None => read
            .header("etag")
            .map(String::from)
            .or_else(|| record["version"].as_u64().map(version_tag)),
    };
    let body = json!({ field: listed.next });
    let reply = patch(ctx, &id, &body, tag.as_deref()).await?;
    update_answer(ctx, &reply, wait, unchanged).await
}

/// The exposed ports after `mecctl expose`: `close` leaves the list (each must be there: a typo
/// is not a silent no-op), then each `open` replaces the entry for its port and protocol or is
/// added. With `anywhere`, an opened entry naming `0.0.0.0/0` says it means it.
pub fn ports_after(
    current: &[ExposedPort],
    open: &[ExposedPort],
    close: &[(String, String)],
    anywhere: bool,
) -> Result<Vec<ExposedPort>, String> {
    let port_of = |p: &PortValue| match p {
        PortValue::Number(n) => n.to_string(),
        PortValue::Text(t) => t.clone(),
    };
    let same = |e: &ExposedPort, port: &str, protocol: &str| {
        e.protocol == protocol && port_of(&e.port) == port
    };
    let mut next = current.to_vec();
    for (port, protocol) in close {
        let before = next.len();
        next.retain(|e| !same(e, port, protocol));
        if next.len() == before {
            let listed: Vec<String> = current
                .iter()
                .map(|e| format!("{}/{}", port_of(&e.port), e.protocol))
                .collect();
            return Err(format!(
                "{port}/{protocol} is not exposed (the cluster exposes: {})",
                if listed.is_empty() {
                    "nothing".to_string()
                } else {
                    listed.join(", ")
                }
            ));
        }
    }
    for entry in open {
        let mut entry = entry.clone();
        entry.allow_anywhere = anywhere && entry.cidrs.iter().any(|c| c.ends_with("/0"));
        let port = port_of(&entry.port);
        match next.iter_mut().find(|e| same(e, &port, &entry.protocol)) {
            Some(slot) => *slot = entry,
            None => next.push(entry),
        }
    }
    Ok(next)
}

/// Reads the cluster's exposed ports, works out the new list (see [`ports_after`]) and, unless
/// it is the same, `PATCH /clusters/{id}` with `{"exposed_ports": [...]}` (see [`patch_list`]).
pub async fn expose(ctx: &Ctx, args: &ExposeArgs) -> Result<(), Failure> {
    patch_list(
        ctx,
        &args.cluster,
        args.if_version,
        &args.wait,
        "exposed_ports",
        |record| {
            let current: Vec<ExposedPort> = spec_list(record, "exposed_ports")?;
            let next = ports_after(&current, &args.open, &args.close, args.anywhere)?;
            let summary = if next.is_empty() {
                "no exposed ports".to_string()
            } else {
                let each: Vec<String> = next.iter().map(ExposedPort::describe).collect();
                format!("exposed ports {}", each.join("; "))
            };
            Ok(Listed {
                unchanged: next == current,
                summary,
                next: json!(next),
            })
        },
    )
    .await
}

/// `POST /clusters/{id}/nodes/{instance id}/replace`: answered and followed as [`scale`] is.
pub async fn replace_node(ctx: &Ctx, args: &ReplaceNodeArgs) -> Result<(), Failure> {
    let path = format!(
        "{}/nodes/{}/replace",
        cluster_path(&args.cluster),
        encode(&args.instance_id)
    );
    let reply = ctx
        .api
        .call_with_headers("POST", &path, Some(&json!({})), &[])
        .await?;
    update_answer(ctx, &reply, &args.wait, |name, id| {
        format!(
            "cluster {name} ({id}): node {} needs no replacing\n",
            args.instance_id
        )
    })
    .await
}

/// An `ETag` naming `version`: `"7"`.
fn version_tag(version: u64) -> String {
    format!("\"{version}\"")
}

/// The `If-Match` header, if there is a tag to match.
fn if_match(tag: Option<&str>) -> Vec<(&str, &str)> {
    tag.map(|t| ("if-match", t)).into_iter().collect()
}

/// The answer to a request that may start an update: `200` prints the record with
/// `unchanged(name, id)` (nothing to change); `202` prints the update started or, with `--wait`,
/// follows it until it ends; anything else is the matching [`Failure`].
async fn update_answer(
    ctx: &Ctx,
    reply: &Reply,
    flags: &WaitFlags,
    unchanged: impl FnOnce(&str, &str) -> String,
) -> Result<(), Failure> {
    let record = &reply.body;
    let (id, name) = id_and_name(record);
    match reply.status {
        200 => {
            ctx.print(record, |_| unchanged(&name, &id));
            Ok(())
        }
        202 => {
            let update_id = reply
                .header("location")
                .and_then(update_id_in)
                .unwrap_or_else(|| newest_update(record)["id"].as_str().unwrap_or_default())
                .to_string();
            let update = update_of(record, &update_id).unwrap_or_else(|| newest_update(record));
            if !flags.wait {
                ctx.print(record, |_| {
                    format!(
                        "cluster {name} ({id}) UPDATING: update {update_id} {}; follow it with `mecctl updates {name}`\n",
                        output::update_change(update)
                    )
                });
                return Ok(());
            }
            eprintln!(
                "cluster {name} ({id}) update {update_id} {} (Ctrl-C stops waiting, not the update)",
                output::update_change(update)
            );
            follow_until(ctx, &id, &name, &[], flags, true, Some(&update_id)).await
        }
        status => Err(Failure::from_answer(status, record)),
    }
}

/// The update id of a `Location: /clusters/{id}/updates/{update id}`.
fn update_id_in(location: &str) -> Option<&str> {
    let (_, rest) = location.rsplit_once("/updates/")?;
    let id = rest.split(['?', '#', '/']).next()?;
    (!id.is_empty()).then_some(id)
}

/// The newest update of a record (the one a `202` started).
fn newest_update(record: &Value) -> &Value {
    record["updates"]
        .as_array()
        .and_then(|u| u.last())
        .unwrap_or(&Value::Null)
}

/// The update `update_id` of a record.
fn update_of<'a>(record: &'a Value, update_id: &str) -> Option<&'a Value> {
    record["updates"]
        .as_array()?
        .iter()
        .find(|u| u["id"] == update_id)
}

/// `GET /clusters/{id}/updates`: ID KIND CHANGE STATUS STARTED FINISHED REASON.
pub async fn updates(ctx: &Ctx, args: &ClusterArg) -> Result<(), Failure> {
    let answer = ctx
        .expect(
            "GET",
            &format!("{}/updates", cluster_path(&args.cluster)),
            None,
            &[],
            200,
        )
        .await?;
    ctx.print(&answer, |v| {
        output::update_table(v["updates"].as_array().map(Vec::as_slice).unwrap_or(&[]))
    });
    Ok(())
}

pub async fn reconcile(ctx: &Ctx, args: &ReconcileArgs) -> Result<(), Failure> {
    let body = serde_json::json!({"dry_run": args.dry_run});
    let answer = ctx
        .expect("POST", "/reconcile", Some(&body), &[], 200)
        .await?;
    ctx.print(&answer, output::reconcile_report);
    Ok(())
}

pub async fn wait(ctx: &Ctx, args: &WaitArgs) -> Result<(), Failure> {
    let record = ctx
        .expect("GET", &cluster_path(&args.cluster), None, &[], 200)
        .await?;
    let (id, name) = id_and_name(&record);
    let until: &[&str] = match record["status"].as_str() {
        Some("DELETING") | Some("DELETED") => &["DELETED"],
        _ => &["ACTIVE"],
    };
    let flags = WaitFlags {
        wait: true,
        timeout: args.timeout,
    };
    follow(ctx, &id, &name, until, &flags, false).await
}

pub async fn kubeconfig(ctx: &Ctx, args: &KubeconfigArgs) -> Result<(), Failure> {
    let answer = ctx
        .expect(
            "GET",
            &format!("{}/kubeconfig", cluster_path(&args.cluster)),
            None,
            &[],
            200,
        )
        .await?;
    let name = answer["name"].as_str().unwrap_or(&args.cluster).to_string();
    let text = answer["kubeconfig"]
        .as_str()
        .ok_or_else(|| Failure::other("the API answered no kubeconfig"))?;
    if args.print {
        print!("{text}");
        return Ok(());
    }
    let path = kubeconfig::default_path(args.kubeconfig.clone())?;
    kubeconfig::write(&path, &name, text, !args.keep_context)?;
    let current = if args.keep_context {
        String::new()
    } else {
        " (now the current context)".into()
    };
    println!(
        "context \"{name}\" written to {}{current}: kubectl --context {name} get nodes",
        path.display()
    );
    Ok(())
}

/// Follows the cluster until its status is in `until`, printing events as they happen (with
/// `only_new`, not those already there) and the status as it changes; ends with the cluster
/// summary. FAILED, a timeout and Ctrl-C are failures with their own exit codes; the cluster is
/// never touched.
async fn follow(
    ctx: &Ctx,
    id: &str,
    name: &str,
    until: &[&str],
    flags: &WaitFlags,
    only_new: bool,
) -> Result<(), Failure> {
    follow_until(ctx, id, name, until, flags, only_new, None).await
}

/// [`follow`], or — given an update id — until that update has ended and the cluster is no longer
/// `UPDATING`; an update that ended `Failed` is a failure (exit 6) naming its reason.
async fn follow_until(
    ctx: &Ctx,
    id: &str,
    name: &str,
    until: &[&str],
    flags: &WaitFlags,
    only_new: bool,
    update: Option<&str>,
) -> Result<(), Failure> {
    let watching = async {
        let start = Instant::now();
        let mut seen = if only_new {
            events_of(ctx, id).await.map(|e| e.len()).unwrap_or(0)
        } else {
            0
        };
        let mut last_status = String::new();
        let mut misses = 0;
        loop {
            let got = ctx.api.call("GET", &cluster_path(id), None, &[]).await;
            let unanswered = match &got {
                Err(f) => Some(f.message.clone()),
                Ok((s, _)) if *s >= 500 || *s == 429 => Some(format!("HTTP {s}")),
                Ok(_) => None,
            };
            if let Some(why) = unanswered.filter(|_| misses < FOLLOW_MISSES) {
                misses += 1;
                eprintln!(
                    "[{:>5}s] no answer ({why}); trying again",
                    start.elapsed().as_secs()
                );
                tokio::time::sleep(POLL).await;
                continue;
            }
            misses = 0;
            let (status, record) = got?;
            let record = match status {
                200 => record,
                404 if until.contains(&"DELETED") => {
                    eprintln!("[{:>5}s] cluster {name} is gone", start.elapsed().as_secs());
                    return Ok(json!({"id": id, "status": "DELETED"}));
                }
                _ => return Err(Failure::from_answer(status, &record)),
            };
            let events = events_of(ctx, id).await.unwrap_or_default();
            for e in events.iter().skip(seen) {
                let detail = e["detail"].as_str().unwrap_or_default();
                eprintln!(
                    "[{:>5}s] {:<22} {:<9} {detail}",
                    start.elapsed().as_secs(),
                    e["stage"].as_str().unwrap_or_default(),
                    e["phase"].as_str().unwrap_or_default(),
                );
            }
            seen = seen.max(events.len());
            let now = record["status"].as_str().unwrap_or_default().to_string();
            if now != last_status {
                eprintln!("[{:>5}s] status {now}", start.elapsed().as_secs());
                last_status = now.clone();
            }
            let settled = match update {
                Some(update_id) => {
                    now != "UPDATING"
                        && update_of(&record, update_id).is_none_or(|u| u["status"] != "InProgress")
                }
                None => until.contains(&now.as_str()) || now == "FAILED",
            };
            if settled {
                return Ok(record);
            }
            if start.elapsed() >= flags.timeout {
                return Err(Failure::new(
                    exit::TIMED_OUT,
                    format!(
                        "cluster {name} is still {now} after {} s; it carries on (mecctl wait {id})",
                        flags.timeout.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let record = tokio::select! {
        r = watching => r?,
        _ = tokio::signal::ctrl_c() => {
            return Err(Failure::new(
                exit::INTERRUPTED,
                format!("stopped waiting; cluster {name} ({id}) carries on: mecctl wait {id}"),
            ));
        }
    };
    let now = OffsetDateTime::now_utc();
    if record["status"] == "DELETED" {
        ctx.print(&record, |_| format!("cluster {name} ({id}) DELETED\n"));
        return Ok(());
    }
    let events = if ctx.format == Format::Table {
        events_of(ctx, id).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    ctx.print(&record, |r| output::cluster_detail(r, &events, now));
    if let Some(update_id) = update {
        let u = update_of(&record, update_id).unwrap_or(&Value::Null);
        let status = u["status"].as_str().unwrap_or("unknown");
        if status != "Successful" {
            let f = &u["failure"];
            return Err(Failure::new(
                exit::CLUSTER_FAILED,
                format!(
                    "update {update_id} of cluster {name} {status}{}; the cluster is {}",
                    match f["reason"].as_str() {
                        Some(reason) => format!(
                            " in {}: {}: {reason}",
                            f["stage"].as_str().unwrap_or("?"),
                            f["error"].as_str().unwrap_or("?")
                        ),
                        None => String::new(),
                    },
                    record["status"].as_str().unwrap_or("?")
                ),
            ));
        }
        eprintln!("update {update_id} of cluster {name} Successful");
        return Ok(());
    }
    if record["status"] == "FAILED" {
        let f = &record["failure"];
        return Err(Failure::new(
            exit::CLUSTER_FAILED,
            format!(
                "cluster {name} FAILED in {}: {}: {}",
                f["stage"].as_str().unwrap_or("?"),
                f["error"].as_str().unwrap_or("?"),
                f["reason"].as_str().unwrap_or("?")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn create_args(argv: &[&str]) -> CreateArgs {
        let mut full = vec!["mecctl", "create"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Create(a) => *a,
            _ => unreachable!(),
        }
    }

    /// An API on 127.0.0.1 that answers the first `failures` GETs of the cluster with 503, then
    /// with the record; events are always empty.
    async fn flaky_api(failures: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut gets = 0;
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0; 16384];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let (status, body) = if request.starts_with("GET /clusters/c-1/events") {
                    ("200 OK", r#"{"events": []}"#.to_string())
                } else {
                    gets += 1;
                    if gets <= failures {
                        (
                            "503 Service Unavailable",
                            r#"{"message": "busy"}"#.to_string(),
                        )
                    } else {
                        ("200 OK", r#"{"id": "c-1", "status": "ACTIVE"}"#.to_string())
                    }
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        format!("http://{addr}")
    }

    /// [`fake_api`] answering the request that starts the update with `202` and `records[0]`.
    async fn scripted_api(records: Vec<Value>) -> (String, Requests) {
        fake_api((202, records[0].clone()), records).await
    }

    /// What a fake API was asked: each request's head and body, in order.
    type Requests = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

    /// An API on 127.0.0.1 that answers every request but a GET (the PATCH or POST that starts an
    /// update) with `change` (a `202` with the `Location` of the record's newest update), and GETs
    /// of the cluster with `records` in turn (the last one from then on), each with its `ETag`
    /// (the record's `version`); events are always empty. The requests it got go to the returned
    /// list.
    async fn fake_api(change: (u16, Value), records: Vec<Value>) -> (String, Requests) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Requests::default();
        let log = seen.clone();
        tokio::spawn(async move {
            let mut gets = 0;
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let request = read_request(&mut sock).await;
                log.lock().unwrap().push(request.clone());
                let (status, body) = if request.starts_with("GET /clusters/c-1/events") {
                    (200, json!({"events": []}))
                } else if !request.starts_with("GET ") {
                    change.clone()
                } else {
                    gets += 1;
                    (200, records[gets.min(records.len()) - 1].clone())
                };
                let mut headers = String::new();
                if let Some(v) = body["version"].as_u64() {
                    headers.push_str(&format!("etag: \"{v}\"\r\n"));
                }
                if status == 202 {
                    let update = newest_update(&body)["id"].as_str().unwrap_or_default();
                    headers.push_str(&format!("location: /clusters/c-1/updates/{update}\r\n"));
                }
                let body = body.to_string();
                let reply = format!(
                    "HTTP/1.1 {status} Answer\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        (format!("http://{addr}"), seen)
    }

    /// One HTTP/1.1 request: its head and, as `content-length` says, its body.
    async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0; 4096];
        loop {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The request whose request line starts with `start` (e.g. `PATCH /clusters/edge `).
    fn request<'a>(seen: &'a [String], start: &str) -> &'a str {
        seen.iter()
            .find(|r| r.starts_with(start))
            .unwrap_or_else(|| panic!("no {start}: {seen:#?}"))
    }

    /// The body of a request, as JSON.
    fn body_of(request: &str) -> Value {
        let (_, body) = request.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {request}"))
    }

    /// The `If-Match` header of a request, if any.
    fn if_match_of(request: &str) -> Option<&str> {
        request
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("if-match"))
            .map(|(_, v)| v.trim())
    }

    /// Cluster c-1 (`edge`) at `version` on 1.32/stable with `addons`, whose newest update is
    /// `update` (`kind`, `params`) with `update_status`.
    fn day2(status: &str, version: u64, addons: &[&str], update: (&str, Value, &str)) -> Value {
        let (kind, params, update_status) = update;
        json!({"id": "c-1", "status": status, "version": version,
               "spec": {"name": "edge", "workers": 2, "microk8s_channel": "1.32/stable", "addons": addons},
               "updates": [
                 {"id": "u-0", "kind": "scale", "params": {"workers": {"from": 1, "to": 2}}, "status": "Successful"},
                 {"id": "u-1", "kind": kind, "params": params, "status": update_status}]})
    }

    fn cluster(status: &str, update_status: &str, failure: Value) -> Value {
        json!({"id": "c-1", "status": status, "spec": {"name": "edge", "workers": 2},
               "updates": [
                 {"id": "u-0", "kind": "scale", "params": {"workers": {"from": 1, "to": 2}}, "status": "Successful"},
                 {"id": "u-1", "kind": "scale", "params": {"workers": {"from": 2, "to": 4}},
                  "status": update_status, "failure": failure}]})
    }

    fn scale_args(argv: &[&str]) -> ScaleArgs {
        let mut full = vec!["mecctl", "scale", "edge"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Scale(a) => a,
            _ => unreachable!(),
        }
    }

    #[tokio::test]
    async fn reconcile_posts_the_dry_run_and_prints_the_plan() {
        let report = json!({
            "trigger": "mecplane.api", "dry_run": true, "only": null, "regions": ["us-east-1"],
            "records": 2, "instances": 5,
            "plan": {
                "actions": [{"action": "replace-node", "cluster_id": "c-1", "instance_id": "i-9",
                             "role": "worker", "index": 1, "reason": "its instance is terminated"}],
                "findings": [{"cluster_id": "c-2", "what": "3 of 3 node(s) look dead"}],
                "clusters_by_status": {"ACTIVE": 2}, "unhealthy_nodes": 4
            },
            "outcomes": []
        });
        let (endpoint, seen) = fake_api((200, report.clone()), vec![report.clone()]).await;
        let ctx = ctx_for(endpoint).await;
        reconcile(&ctx, &ReconcileArgs { dry_run: true })
            .await
            .expect("200");
        let seen = seen.lock().unwrap();
        assert!(seen[0].starts_with("POST /reconcile"), "{}", seen[0]);
        assert!(seen[0].ends_with(r#"{"dry_run":true}"#), "{}", seen[0]);
        let text = output::reconcile_report(&report);
        assert!(text.starts_with("Reconcile (dry run): 2 cluster record(s), 5 instance(s) in us-east-1; 4 unhealthy node(s)"), "{text}");
        assert!(
            text.contains("replace-node")
                && text.contains("its instance is terminated")
                && text.contains("planned"),
            "{text}"
        );
        assert!(
            text.contains("reported, not acted on: c-2: 3 of 3 node(s) look dead"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn scale_follows_the_update_until_it_ends() {
        let (endpoint, seen) = scripted_api(vec![
            cluster("UPDATING", "InProgress", Value::Null),
            cluster("UPDATING", "InProgress", Value::Null),
            cluster("ACTIVE", "Successful", Value::Null),
        ])
        .await;
        let ctx = ctx_for(endpoint).await;
        scale(
            &ctx,
            &scale_args(&["--workers", "4", "--wait", "--if-version", "7"]),
        )
        .await
        .expect("the update ended Successful");
        let seen = seen.lock().unwrap();
        let patch = seen.iter().find(|r| r.starts_with("PATCH")).unwrap();
        assert!(patch.ends_with(r#"{"workers":4}"#), "{patch}");
        assert!(
            patch.to_ascii_lowercase().contains("if-match: \"7\""),
            "{patch}"
        );
    }

    #[tokio::test]
    async fn a_failed_update_exits_6_with_its_reason() {
        let failure =
            json!({"stage": "join-workers", "error": "CommandFailed", "reason": "join refused"});
        let (endpoint, _) = scripted_api(vec![
            cluster("UPDATING", "InProgress", Value::Null),
            cluster("ACTIVE", "Failed", failure),
        ])
        .await;
        let ctx = ctx_for(endpoint).await;
        let err = scale(&ctx, &scale_args(&["--workers", "4", "--wait"]))
            .await
            .unwrap_err();
        assert_eq!(err.code, exit::CLUSTER_FAILED, "{}", err.message);
        assert!(
            err.message.contains("update u-1 of cluster edge Failed in join-workers: CommandFailed: join refused; the cluster is ACTIVE"),
            "{}",
            err.message
        );
        // Without --wait, the 202 is the answer.
        scale(&ctx, &scale_args(&["--workers", "4"])).await.unwrap();
    }

    fn parse(argv: &[&str]) -> Command {
        let mut full = vec!["mecctl"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).unwrap().command
    }

    fn upgrade_args(argv: &[&str]) -> UpgradeArgs {
        let mut full = vec!["upgrade", "edge"];
        full.extend_from_slice(argv);
        match parse(&full) {
            Command::Upgrade(a) => a,
            _ => unreachable!(),
        }
    }

    fn addons_args(argv: &[&str]) -> AddonsArgs {
        let mut full = vec!["addons", "edge"];
        full.extend_from_slice(argv);
        match parse(&full) {
            Command::Addons(a) => a,
            _ => unreachable!(),
        }
    }

    fn replace_args(argv: &[&str]) -> ReplaceNodeArgs {
        let mut full = vec!["replace-node"];
        full.extend_from_slice(argv);
        match parse(&full) {
            Command::ReplaceNode(a) => a,
            _ => unreachable!(),
        }
    }

    fn upgrade_update(status: &str) -> (&'static str, Value, &str) {
        let params = json!({"microk8s_channel": {"from": "1.32/stable", "to": "1.33/stable"}});
        ("upgrade", params, status)
    }

    #[tokio::test]
    async fn upgrade_follows_the_update_until_it_ends() {
        let (endpoint, seen) = scripted_api(vec![
            day2("UPDATING", 4, &["dns"], upgrade_update("InProgress")),
            day2("UPDATING", 4, &["dns"], upgrade_update("InProgress")),
            day2("ACTIVE", 5, &["dns"], upgrade_update("Successful")),
        ])
        .await;
        let ctx = ctx_for(endpoint).await;
        upgrade(
            &ctx,
            &upgrade_args(&[
                "--channel",
                "1.33/stable",
                "--max-unavailable",
                "2",
                "--if-version",
                "3",
                "--wait",
            ]),
        )
        .await
        .expect("the update ended Successful");
        let seen = seen.lock().unwrap();
        let patch = request(&seen, "PATCH /clusters/edge ");
        assert_eq!(
            body_of(patch),
            json!({"microk8s_channel": "1.33/stable", "max_unavailable": 2})
        );
        assert_eq!(if_match_of(patch), Some("\"3\""), "{patch}");
        assert!(
            seen.iter()
                .filter(|r| r.starts_with("GET /clusters/c-1 "))
                .count()
                >= 3,
            "followed until the update ended: {seen:#?}"
        );
    }

    #[tokio::test]
    async fn upgrade_says_when_nothing_changes_and_fails_as_the_api_says() {
        let same = day2("ACTIVE", 4, &["dns"], upgrade_update("Successful"));
        let (endpoint, seen) = fake_api((200, same.clone()), vec![same]).await;
        let ctx = ctx_for(endpoint).await;
        upgrade(&ctx, &upgrade_args(&["--channel", "1.32/stable", "--wait"]))
            .await
            .expect("200: nothing to change");
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 1, "nothing followed: {seen:#?}");
            assert_eq!(if_match_of(&seen[0]), None, "no --if-version, no If-Match");
        }

        let stale = json!({"error": {"code": "PreconditionFailed", "message": "cluster c-1 is at version 5"}});
        let (endpoint, _) = fake_api((412, stale), vec![Value::Null]).await;
        let err = upgrade(
            &ctx_for(endpoint).await,
            &upgrade_args(&["--channel", "1.33/stable", "--if-version", "4"]),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code, exit::CONFLICT, "{}", err.message);
        assert!(
            err.message.starts_with("PreconditionFailed (412)"),
            "{}",
            err.message
        );

        let skip = json!({"error": {"code": "ValidationError", "field": "microk8s_channel", "message": "1.33/stable skips a minor"}});
        let (endpoint, _) = fake_api((422, skip), vec![Value::Null]).await;
        let err = upgrade(
            &ctx_for(endpoint).await,
            &upgrade_args(&["--channel", "1.33/stable"]),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code, exit::INVALID, "{}", err.message);
        assert!(
            err.message
                .contains("microk8s_channel: 1.33/stable skips a minor"),
            "{}",
            err.message
        );
    }

    fn addons_update(status: &str) -> (&'static str, Value, &str) {
        let params = json!({"addons": {"from": ["dns", "metallb:10.0.0.1-10.0.0.9"],
                                       "to": ["metallb:10.0.0.10-10.0.0.20", "ingress"]}});
        ("addons", params, status)
    }

    #[tokio::test]
    async fn addons_patches_the_new_list_at_the_version_it_read_and_follows_the_update() {
        let before = &["dns", "metallb:10.0.0.1-10.0.0.9"];
        let after = &["metallb:10.0.0.10-10.0.0.20", "ingress"];
        let (endpoint, seen) = fake_api(
            (
                202,
                day2("UPDATING", 8, before, addons_update("InProgress")),
            ),
            vec![
                day2("ACTIVE", 7, before, ("scale", json!({}), "Successful")),
                day2("UPDATING", 8, before, addons_update("InProgress")),
                day2("ACTIVE", 9, after, addons_update("Successful")),
            ],
        )
        .await;
        let ctx = ctx_for(endpoint).await;
        addons(
            &ctx,
            &addons_args(&[
                "--enable",
                "metallb:10.0.0.10-10.0.0.20",
                "--enable",
                "ingress",
                "--disable",
                "dns",
                "--wait",
            ]),
        )
        .await
        .expect("the update ended Successful");
        let seen = seen.lock().unwrap();
        assert!(
            seen[0].starts_with("GET /clusters/edge "),
            "read first: {seen:#?}"
        );
        let patch = request(&seen, "PATCH /clusters/c-1 ");
        assert_eq!(
            body_of(patch),
            json!({"addons": ["metallb:10.0.0.10-10.0.0.20", "ingress"]})
        );
        assert_eq!(if_match_of(patch), Some("\"7\""), "the ETag read: {patch}");
        assert!(
            seen.iter()
                .filter(|r| r.starts_with("GET /clusters/c-1 "))
                .count()
                >= 2,
            "followed until the update ended: {seen:#?}"
        );
    }

    #[tokio::test]
    async fn addons_if_version_wins_and_an_unchanged_list_is_not_sent() {
        let current = day2("ACTIVE", 7, &["dns"], ("scale", json!({}), "Successful"));
        let (endpoint, seen) = fake_api(
            (
                202,
                day2("UPDATING", 8, &["dns"], addons_update("InProgress")),
            ),
            vec![current],
        )
        .await;
        let ctx = ctx_for(endpoint).await;
        addons(
            &ctx,
            &addons_args(&["--enable", "ingress", "--if-version", "6"]),
        )
        .await
        .expect("202 without --wait");
        {
            let seen = seen.lock().unwrap();
            let patch = request(&seen, "PATCH /clusters/c-1 ");
            assert_eq!(body_of(patch), json!({"addons": ["dns", "ingress"]}));
            assert_eq!(if_match_of(patch), Some("\"6\""), "{patch}");
            assert_eq!(seen.len(), 2, "not followed without --wait: {seen:#?}");
            assert!(seen[0].starts_with("GET /clusters/edge "), "{seen:#?}");
        }

        // Already so (ingress is enabled with these arguments; metallb is not there): no PATCH.
        let current = day2(
            "ACTIVE",
            7,
            &["dns", "ingress"],
            ("scale", json!({}), "Successful"),
        );
        let (endpoint, seen) = fake_api((202, Value::Null), vec![current]).await;
        addons(
            &ctx_for(endpoint).await,
            &addons_args(&["--enable", "ingress", "--disable", "metallb", "--wait"]),
        )
        .await
        .expect("nothing to change");
        let requests = seen.lock().unwrap().clone();
        assert_eq!(requests.len(), 1, "only the read: {requests:#?}");

        // The same name enabled and disabled: a usage error before anything is asked.
        let (endpoint, seen) = fake_api((202, Value::Null), vec![Value::Null]).await;
        let err = addons(
            &ctx_for(endpoint).await,
            &addons_args(&[
                "--enable",
                "metallb:10.0.0.1-10.0.0.9",
                "--disable",
                "metallb",
            ]),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code, exit::USAGE, "{}", err.message);
        assert!(
            err.message
                .contains("'metallb' is both enabled and disabled"),
            "{}",
            err.message
        );
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn addons_reports_a_concurrent_change_as_a_conflict() {
        let current = day2("ACTIVE", 7, &["dns"], ("scale", json!({}), "Successful"));
        let stale = json!({"error": {"code": "PreconditionFailed", "message": "cluster c-1 is at version 8 (ETag \"8\"), not If-Match \"7\""}});
        let (endpoint, _) = fake_api((412, stale), vec![current]).await;
        let err = addons(
            &ctx_for(endpoint).await,
            &addons_args(&["--disable", "dns"]),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code, exit::CONFLICT, "{}", err.message);
        assert!(
            err.message.contains("not If-Match \"7\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_addon_list_is_computed_by_name_keeping_order() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let current = v(&["dns", "metallb:10.0.0.1-10.0.0.9", "hostpath-storage"]);
        // Enabling one that is there replaces it where it is; a new one goes last.
        assert_eq!(
            addons_after(
                &current,
                &v(&["metallb:10.0.0.1-10.0.0.20", "ingress"]),
                &[]
            ),
            Ok(v(&[
                "dns",
                "metallb:10.0.0.1-10.0.0.20",
                "hostpath-storage",
                "ingress"
            ]))
        );
        // Disabling is by name, arguments or not; an absent name changes nothing.
        assert_eq!(
            addons_after(&current, &[], &v(&["metallb", "gpu"])),
            Ok(v(&["dns", "hostpath-storage"]))
        );
        assert_eq!(
            addons_after(&current, &v(&["metallb"]), &v(&["dns"])),
            Ok(v(&["metallb", "hostpath-storage"])),
            "arguments dropped by enabling the bare name"
        );
        assert_eq!(
            addons_after(&current, &v(&["dns"]), &[]),
            Ok(current.clone())
        );
        assert_eq!(
            addons_after(&[], &v(&["dns", "ingress"]), &v(&["rbac"])),
            Ok(v(&["dns", "ingress"]))
        );
        assert_eq!(
            addons_after(&current, &[], &v(&["dns", "metallb", "hostpath-storage"])),
            Ok(vec![])
        );
        assert_eq!(
            addons_after(
                &current,
                &v(&["metallb:10.0.0.5-10.0.0.6"]),
                &v(&["metallb"])
            ),
            Err("'metallb' is both enabled and disabled".into())
        );
        assert_eq!(
            addons_after(&current, &v(&["ingress", "metallb", "ingress:x"]), &[]),
            Err("'ingress' is enabled twice".into())
        );
    }

    #[test]
    fn the_port_list_is_computed_by_port_and_protocol_keeping_order() {
        let entry = |port: PortValue, protocol: &str, cidr: &str| ExposedPort {
            port,
            protocol: protocol.into(),
            cidrs: vec![cidr.into()],
            allow_anywhere: false,
        };
        let https = entry(PortValue::Number(443), "tcp", "203.0.113.0/24");
        let nodeports = entry(PortValue::Text("30000-32767".into()), "udp", "10.0.0.0/8");
        let current = vec![https.clone(), nodeports.clone()];
        let close = |port: &str, protocol: &str| (port.to_string(), protocol.to_string());
        // Opening a port that is there replaces its entry where it is; a new one goes last.
        let moved = entry(PortValue::Number(443), "tcp", "198.51.100.0/24");
        let metrics = entry(PortValue::Number(9100), "tcp", "10.0.0.0/8");
        assert_eq!(
            ports_after(&current, &[moved.clone(), metrics.clone()], &[], false),
            Ok(vec![moved, nodeports.clone(), metrics])
        );
        // Closing is by port (or range) and protocol; a port not exposed is an error, not a no-op.
        assert_eq!(
            ports_after(&current, &[], &[close("443", "tcp")], false),
            Ok(vec![nodeports.clone()])
        );
        assert_eq!(
            ports_after(&current, &[], &[close("30000-32767", "tcp")], false),
            Err(
                "30000-32767/tcp is not exposed (the cluster exposes: 443/tcp, 30000-32767/udp)"
                    .into()
            )
        );
        // 0.0.0.0/0 says it means it only with --anywhere.
        let world = entry(PortValue::Number(80), "tcp", "0.0.0.0/0");
        assert!(
            !ports_after(&[], std::slice::from_ref(&world), &[], false).unwrap()[0].allow_anywhere
        );
        assert!(ports_after(&[], &[world], &[], true).unwrap()[0].allow_anywhere);
        assert!(
            !ports_after(&[], std::slice::from_ref(&https), &[], true).unwrap()[0].allow_anywhere
        );
    }

    #[test]
    fn the_update_of_a_location_is_its_last_segment() {
        assert_eq!(
            update_id_in("/clusters/c-1/updates/u-0123456789abcdef"),
            Some("u-0123456789abcdef")
        );
        assert_eq!(
            update_id_in("https://api.example/clusters/c-1/updates/u-2?x=1"),
            Some("u-2")
        );
        assert_eq!(update_id_in("/clusters/c-1"), None);
        assert_eq!(update_id_in("/clusters/c-1/updates/"), None);
    }

    fn replace_update(status: &str) -> (&'static str, Value, &str) {
        // As the API records a replacement (mecplane::change::Change::params).
        let params = json!({"node": {"instance_id": "i-0abc", "role": "worker", "index": 1}});
        ("replace-node", params, status)
    }

    #[tokio::test]
    async fn replace_node_posts_an_empty_body_and_follows_the_update() {
        let (endpoint, seen) = scripted_api(vec![
            day2("UPDATING", 4, &["dns"], replace_update("InProgress")),
            day2("UPDATING", 5, &["dns"], replace_update("InProgress")),
            day2("ACTIVE", 6, &["dns"], replace_update("Successful")),
        ])
        .await;
        let ctx = ctx_for(endpoint).await;
        replace_node(&ctx, &replace_args(&["edge", "i-0abc", "--wait"]))
            .await
            .expect("the update ended Successful");
        let seen = seen.lock().unwrap();
        let post = request(&seen, "POST /clusters/edge/nodes/i-0abc/replace ");
        assert_eq!(body_of(post), json!({}));
        assert_eq!(if_match_of(post), None, "{post}");
        assert!(
            seen.iter()
                .filter(|r| r.starts_with("GET /clusters/c-1 "))
                .count()
                >= 3,
            "followed until the update ended: {seen:#?}"
        );
    }

    #[tokio::test]
    async fn replace_node_fails_as_the_api_says_with_its_path_encoded() {
        let failure =
            json!({"stage": "launch-replacement", "error": "CloudError", "reason": "no capacity"});
        let mut ended = day2("ACTIVE", 6, &["dns"], replace_update("Failed"));
        ended["updates"][1]["failure"] = failure;
        let (endpoint, _) = scripted_api(vec![
            day2("UPDATING", 4, &["dns"], replace_update("InProgress")),
            ended,
        ])
        .await;
        let err = replace_node(
            &ctx_for(endpoint).await,
            &replace_args(&["edge", "i-0abc", "--wait"]),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code, exit::CLUSTER_FAILED, "{}", err.message);
        assert!(
            err.message.contains(
                "update u-1 of cluster edge Failed in launch-replacement: CloudError: no capacity"
            ),
            "{}",
            err.message
        );

        let not_a_node =
            json!({"error": {"code": "NotFound", "message": "i-1/2 is not a node of cluster c-1"}});
        let (endpoint, seen) = fake_api((404, not_a_node), vec![Value::Null]).await;
        let err = replace_node(
            &ctx_for(endpoint).await,
            &replace_args(&["edge one", "i-1/2"]),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code, exit::NOT_FOUND, "{}", err.message);
        request(
            &seen.lock().unwrap(),
            "POST /clusters/edge%20one/nodes/i-1%2F2/replace ",
        );

        let busy = json!({"error": {"code": "ClusterBusy", "message": "cluster c-1 is UPDATING"}});
        let (endpoint, _) = fake_api((409, busy), vec![Value::Null]).await;
        let err = replace_node(&ctx_for(endpoint).await, &replace_args(&["edge", "i-0abc"]))
            .await
            .unwrap_err();
        assert_eq!(err.code, exit::CONFLICT, "{}", err.message);
        assert!(
            err.message.starts_with("ClusterBusy (409)"),
            "{}",
            err.message
        );
    }

    async fn ctx_for(endpoint: String) -> Ctx {
        let target = crate::config::Target {
            endpoint,
            region: "us-east-1".into(),
            local_credentials: Some(("testing".into(), "testing".into())),
        };
        Ctx {
            api: ApiClient::new(target).await.unwrap(),
            format: Format::Json,
        }
    }

    fn wait_flags() -> WaitFlags {
        WaitFlags {
            wait: true,
            timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn following_rides_out_a_few_unanswered_polls() {
        let ctx = ctx_for(flaky_api(2).await).await;
        follow(&ctx, "c-1", "edge", &["ACTIVE"], &wait_flags(), false)
            .await
            .expect("two 503s in a row are ridden out");
    }

    #[tokio::test]
    async fn following_gives_up_when_the_api_stays_away() {
        let ctx = ctx_for(flaky_api(usize::MAX).await).await;
        let err = follow(&ctx, "c-1", "edge", &["ACTIVE"], &wait_flags(), false)
            .await
            .unwrap_err();
        assert_eq!(err.code, exit::API, "{}", err.message);
    }

    #[test]
    fn flags_override_the_spec_file() {
        let dir = std::env::temp_dir().join(format!("mecctl-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("spec.json");
        std::fs::write(
            &file,
            r#"{"name": "from-file", "workers": 1, "tags": {"team": "edge"}}"#,
        )
        .unwrap();
        let req = create_request(&create_args(&[
            "-f",
            file.to_str().unwrap(),
            "--workers",
            "3",
            "--tag",
            "env=lab",
            "--allow-cidr",
            "203.0.113.0/24",
        ]))
        .unwrap();
        assert_eq!(req.name.as_deref(), Some("from-file"));
        assert_eq!(req.workers, Some(3));
        assert_eq!(req.tags.unwrap().len(), 2);
        assert_eq!(req.api_allowed_cidrs.unwrap(), ["203.0.113.0/24"]);
        assert_eq!(req.control_planes, None, "left to the API's default");
        assert_eq!(
            req.allow_api_from_anywhere, None,
            "not sent unless asked for"
        );
        let anywhere = create_request(&create_args(&[
            "--name",
            "open",
            "--allow-cidr",
            "0.0.0.0/0",
            "--allow-api-from-anywhere",
        ]))
        .unwrap();
        assert_eq!(anywhere.allow_api_from_anywhere, Some(true));
        let exposed = create_request(&create_args(&[
            "--name",
            "web",
            "--expose",
            "443=203.0.113.0/24",
            "--expose",
            "30000-32767/udp=10.0.0.0/8,0.0.0.0/0",
            "--expose-anywhere",
        ]))
        .unwrap();
        let ports = serde_json::to_value(exposed.exposed_ports.unwrap()).unwrap();
        assert_eq!(
            ports,
            serde_json::json!([
                {"port": 443, "protocol": "tcp", "cidrs": ["203.0.113.0/24"]},
                {"port": "30000-32767", "protocol": "udp", "cidrs": ["10.0.0.0/8", "0.0.0.0/0"], "allow_anywhere": true},
            ])
        );
        let spread = create_request(&create_args(&[
            "--name",
            "ha",
            "--subnet",
            "subnet-0000000a",
            "--subnet",
            "subnet-0000000b",
            "--worker-subnet",
            "subnet-000000ff",
        ]))
        .unwrap();
        assert_eq!(
            (
                spread.subnet_ids,
                spread.worker_subnet_ids,
                spread.subnet_id
            ),
            (
                Some(vec!["subnet-0000000a".into(), "subnet-0000000b".into()]),
                Some(vec!["subnet-000000ff".into()]),
                None
            )
        );

        let fronted = create_request(&create_args(&[
            "--name",
            "ha",
            "--api-endpoint",
            "nlb",
            "--extra-san",
            "k8s.edge.example",
            "--extra-san",
            "203.0.113.9",
        ]))
        .unwrap();
        assert_eq!(
            (fronted.api_endpoint.as_deref(), fronted.extra_sans),
            (
                Some("nlb"),
                Some(vec!["k8s.edge.example".into(), "203.0.113.9".into()])
            )
        );
        let plain = create_request(&create_args(&["--name", "one"])).unwrap();
        assert_eq!((plain.api_endpoint, plain.extra_sans), (None, None));
        assert_eq!(plain.pod_security, None, "the API's default, baseline");
        let strict = create_request(&create_args(&[
            "--name",
            "one",
            "--pod-security",
            "restricted",
        ]))
        .unwrap();
        assert_eq!(strict.pod_security.as_deref(), Some("restricted"));

        std::fs::write(&file, r#"{"name": "x", "wokers": 1}"#).unwrap();
        let err = create_request(&create_args(&["-f", file.to_str().unwrap()])).unwrap_err();
        assert_eq!(err.code, exit::INVALID);
        assert!(err.message.contains("wokers"), "{}", err.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_tf_vars_reads_the_blueprint_variables_under_the_flags() {
        let env = |k: &str| {
            let v = match k {
                "TF_VAR_aws_region" => "us-east-1",
                "TF_VAR_aws_instance" => "t3.medium",
                "TF_VAR_aws_ami" => "ami-0123456789abcdef0",
                "TF_VAR_aws_subnet_id" => "subnet-0123456789abcdef0",
                "TF_VAR_vpc_id" => "vpc-0123456789abcdef0",
                _ => return None,
            };
            Some(v.to_string())
        };
        let body = create_body(
            &create_args(&[
                "edge",
                "--from-tf-vars",
                "--ami-id",
                "ami-00000000000000fff",
            ]),
            &env,
        )
        .unwrap();
        assert_eq!(
            body,
            json!({
                "name": "edge",
                "region": "us-east-1",
                "instance_type": "t3.medium",
                "ami_id": "ami-00000000000000fff",
                "subnet_ids": ["subnet-0123456789abcdef0"],
                "workers": 1,
            })
        );
        // Without the flag the variables are not read; a missing one is a usage error naming it.
        let plain = create_body(&create_args(&["edge"]), &env).unwrap();
        assert_eq!(plain["region"], Value::Null);
        let err = create_body(&create_args(&["edge", "--from-tf-vars"]), &|_| None).unwrap_err();
        assert_eq!(err.code, exit::USAGE);
        assert!(err.message.contains("TF_VAR_aws_region"), "{}", err.message);
    }
}
