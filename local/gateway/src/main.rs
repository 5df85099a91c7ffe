//! `mecplane-local`: the local stack gateway (docs/architecture.md, "The local stack").
//!
//! On 127.0.0.1 it hosts the function binaries behind the Lambda Runtime API (one child process per
//! concurrent invocation, started lazily, each with its own Runtime API listener), serves the
//! Lambda Invoke API, fronts the `api` function as an API Gateway HTTP API (payload 2.0) under
//! `/api`, routes SSM Run Command and the `/_sim` control API to the node simulator and forwards
//! everything else to moto.
//!
//! # Start-up
//!
//! 1. bind the public listener (`--port 0` picks a free port);
//! 2. with `--spawn-moto <repo>/local/moto_catalogue.py` (moto with the local zone catalogue and
//!    carrier IPs, run by `--python`), start moto as a child on `--moto-port` (0 = a free port)
//!    with `MOTO_PORT=<gateway port>`; otherwise use the moto at `--moto-endpoint` /
//!    `http://127.0.0.1:<--moto-port>`, which must have been started with `MOTO_PORT=<gateway port>`;
//! 3. wait for moto, `POST /moto-api/config {"stepfunctions":{"execute_state_machine":true}}`;
//! 4. run `<python> local/provision.py --template <template> --region <r> --endpoint-url <moto>`
//!    (table, state machines, instance profile from the SAM template) unless `--skip-provision`;
//! 5. write `<state-dir>/local.env` atomically and print one line to stdout:
//!    `mecplane-local ready in <secs>s: gateway http://127.0.0.1:<port> moto <endpoint> env <path>`.
//!
//! SIGTERM or SIGINT kills every function process, the simulator's commands and a spawned moto,
//! removes `local.env` and exits 0. Function processes also die with the gateway if it is killed
//! (`PR_SET_PDEATHSIG`). A startup failure exits 1 with the reason on stderr.
//!
//! # Contract for tests that start their own stack
//!
//! ```text
//! target/debug/mecplane-local \
//!     --port 0 --moto-port 0 --spawn-moto <repo>/local/moto_catalogue.py \
//!     --state-dir <fresh temp dir> --repo-root <repo> \
//!     --functions-dir <repo>/target/debug [--function <name>]... \
//!     [--template <sam template>] [--skip-provision] \
//!     [--api-auth none] [--agent-delay-ms 200] [--sim off]
//! ```
//!
//! 1. spawn that command (stdout/stderr piped or inherited), keep the `Child`;
//! 2. poll until `<state-dir>/local.env` exists (it appears atomically, complete, only when the
//!    stack is ready; a few seconds — fail after ~60 s or when the child exits first);
//! 3. read it: `KEY=VALUE` lines, no quoting. `AWS_ENDPOINT_URL` is the gateway (point every SDK
//!    client there, region `AWS_REGION`, static credentials `AWS_ACCESS_KEY_ID` /
//!    `AWS_SECRET_ACCESS_KEY`), `MECPLANE_API_URL` the HTTP API, `MECPLANE_TABLE`,
//!    `MECPLANE_CREATE_STATE_MACHINE_ARN`, `MECPLANE_DELETE_STATE_MACHINE_ARN`,
//!    `MECPLANE_UPDATE_STATE_MACHINE_ARN` the provisioned resources, `MECPLANE_MOTO_ENDPOINT` moto itself, `MECPLANE_GATEWAY_PID` the gateway;
//! 4. to stop: send SIGTERM to the child and wait for it (it exits within a few seconds, taking moto
//!    and every function process with it); killing it with SIGKILL still takes the function and moto
//!    processes down (parent-death signal). Function logs are in `<state-dir>/logs/<fn>.log`,
//!    moto's in `<state-dir>/logs/moto.log`.
//!
//! Every flag also reads an environment variable (`MECPLANE_GATEWAY_PORT`, `MECPLANE_MOTO_PORT`,
//! `MECPLANE_MOTO_ENDPOINT`, `MECPLANE_SPAWN_MOTO`, `MECPLANE_STATE_DIR`, `MECPLANE_REPO_ROOT`,
//! `MECPLANE_FUNCTIONS_DIR`, `MECPLANE_FUNCTION_ENV_FILE`, `MECPLANE_TEMPLATE`, `MECPLANE_PYTHON`,
//! `MECPLANE_REGION`, `MECPLANE_API_AUTH`, `MECPLANE_MAX_CONCURRENCY`,
//! `MECPLANE_FUNCTION_TIMEOUT_SECS`, `MECPLANE_AGENT_DELAY_MS`, `MECPLANE_STAND_INS_DIR`, `MECPLANE_SIM`,
//! `MECPLANE_RECONCILE_INTERVAL_SECONDS`); see `mecplane-local --help`.
//!
//! # The reconcile function's triggers
//!
//! The stack runs `reconcile` from an EventBridge schedule and an EC2 state-change rule; the gateway
//! plays both (see [`reconcile`]): every `--reconcile-interval-seconds` (default: the template's
//! `ReconcileRateMinutes` × 60; 0 = never; a tick is skipped while the previous scheduled run goes)
//! it invokes `reconcile` with `{"source":"mecplane.schedule"}`, and after each `TerminateInstances`
//! / `StopInstances` it forwarded and moto accepted it invokes it with EC2's state-change event per
//! instance. `GET /_local/reconciles` lists those runs with the function's answers.
//!
//! # A second deployment on the same moto
//!
//! A gateway started with `--moto-endpoint` of another stack's moto (and its own `--region` and
//! `NamePrefix`, through `MECPLANE_TEMPLATE_PARAMETERS`) is a second deployment in the same
//! account. moto's Step Functions calls Lambda on the first gateway's port only, so the second
//! registers there with `PUT /_local/peers/<its region>` (body: its URL), and the first forwards
//! the invocations of that region's functions to it.
//!
//! # Function environment
//!
//! Each function process gets a clean environment: `PATH`, `HOME`, `RUST_LOG`, `RUST_BACKTRACE`
//! from the gateway; the literal `Environment.Variables` of its template resource; then
//! `AWS_ENDPOINT_URL` (the gateway), `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY=testing`,
//! `MECPLANE_TABLE`, `MECPLANE_CREATE_STATE_MACHINE_ARN`, `MECPLANE_DELETE_STATE_MACHINE_ARN`,
//! `MECPLANE_UPDATE_STATE_MACHINE_ARN`, `MECPLANE_NODE_INSTANCE_PROFILE`; then the lines of `--function-env-file`; then the Lambda
//! variables (`AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME`,
//! `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, `AWS_LAMBDA_FUNCTION_VERSION=$LATEST`,
//! `AWS_LAMBDA_LOG_FORMAT=JSON`, `AWS_REGION`).

mod apigw;
mod app;
mod arn;
mod calls;
mod config;
mod functions;
mod invoke;
mod proxy;
mod reconcile;
mod runtime_api;
mod startup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mecplane_nodesim::{SimConfig, Simulator};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Args, SimMode, ACCOUNT_ID};
use crate::functions::{FunctionSpec, Functions, PoolSettings};
use crate::startup::{Provisioned, StartupError};

/// Memory size reported to functions when the template does not say.
const DEFAULT_MEMORY_MB: u32 = 128;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MECPLANE_LOCAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => {}
        Err(e) => {
            eprintln!("mecplane-local: {e}");
            std::process::exit(1);
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn shutdown_signal() {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(args: Args) -> Result<(), StartupError> {
    let started = Instant::now();
    std::fs::create_dir_all(args.log_dir())?;
    let env_path = args.env_file();
    match std::fs::remove_file(&env_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let port = listener.local_addr()?.port();

    let mut moto_child = None;
    let moto_endpoint = match (&args.spawn_moto, &args.moto_endpoint) {
        (Some(exe), _) => {
            let moto_port = match args.moto_port {
                0 => startup::free_port()?,
                p => p,
            };
            let log = args.log_dir().join("moto.log");
            moto_child = Some(startup::spawn_moto(
                &args.python_path(),
                exe,
                moto_port,
                port,
                &log,
            )?);
            format!("http://127.0.0.1:{moto_port}")
        }
        (None, Some(endpoint)) => endpoint.trim_end_matches('/').to_string(),
        (None, None) => format!("http://127.0.0.1:{}", args.moto_port),
    };
    let moto = proxy::Moto::new(&moto_endpoint);

    let prepared = tokio::select! {
        r = prepare(&args, &moto) => r,
        _ = shutdown_signal() => {
            tracing::info!("interrupted during start-up");
            return Ok(());
        }
    };
    let provisioned = prepared?;

    let sim = match args.sim {
        SimMode::On => Some(
            Simulator::new(SimConfig {
                work_dir: args.state_dir.join("sim"),
                moto_endpoint: moto_endpoint.clone(),
                region: args.region.clone(),
                regions: args.regions(),
                agent_delay: Duration::from_millis(args.agent_delay_ms),
                stand_ins_dir: args.stand_ins_path(),
            })
            .await
            .map_err(|e| StartupError::Simulator(e.to_string()))?,
        ),
        SimMode::Off => None,
    };

    let functions = build_functions(&args, port, &provisioned)?;
    let reconcile_interval = reconcile::interval(
        args.reconcile_interval_seconds,
        provisioned.parameters.get(reconcile::RATE_PARAMETER),
    );
    let state = app::AppState {
        functions: functions.clone(),
        region: args.region.clone(),
        account: ACCOUNT_ID,
        api_auth: args.api_auth,
        moto,
        sim: sim.clone(),
        calls: Default::default(),
        reconciles: Arc::new(
            reconcile::Reconciles::new(reconcile_interval)
                .with_ec2_events(args.reconcile_ec2_events),
        ),
        peers: Default::default(),
    };
    let router = app::router(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "gateway listener failed");
        }
    });

    let env_lines = startup::env_file_lines(port, &args.region, &provisioned, &moto_endpoint);
    startup::write_atomic(&env_path, &startup::render_env(&env_lines))?;
    println!(
        "mecplane-local ready in {:.2}s: gateway http://127.0.0.1:{port} moto {moto_endpoint} env {}",
        started.elapsed().as_secs_f64(),
        env_path.display()
    );
    let schedule = reconcile::spawn_schedule(state);

    let moto_died = async {
        match moto_child.as_mut() {
            Some(child) => {
                let status = child.wait().await;
                tracing::error!(?status, "moto exited");
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        _ = moto_died => {}
    }

    let _ = std::fs::remove_file(&env_path);
    if let Some(schedule) = schedule {
        schedule.abort();
    }
    functions.shutdown(Duration::from_secs(5)).await;
    if let Some(sim) = &sim {
        sim.shutdown().await;
    }
    let _ = stop_tx.send(());
    // Long-polling or long-running connections must not hold the exit.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    if let Some(mut child) = moto_child {
        if let Some(pid) = child.id() {
            functions::kill(pid, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(3), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    Ok(())
}

async fn prepare(args: &Args, moto: &proxy::Moto) -> Result<Provisioned, StartupError> {
    startup::prepare_moto(moto, Duration::from_secs(args.moto_wait_secs)).await?;
    if args.skip_provision {
        return Ok(Provisioned::default());
    }
    startup::provision(
        &args.python_path(),
        &args.provision_script_path(),
        &args.template_path(),
        &args.regions(),
        moto.endpoint(),
    )
    .await
}

fn build_functions(
    args: &Args,
    port: u16,
    provisioned: &Provisioned,
) -> Result<Functions, StartupError> {
    let mut env: Vec<(String, String)> = vec![
        (
            "AWS_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        // moto answers operations it lacks with HTML 500s: not worth an SDK retry here (Step
        // Functions still retries the stage as the state machine says).
        ("AWS_MAX_ATTEMPTS".into(), "1".into()),
        (
            "MECPLANE_TABLE".into(),
            provisioned.table.clone().unwrap_or_default(),
        ),
        (
            "MECPLANE_CREATE_STATE_MACHINE_ARN".into(),
            provisioned.create_arn(),
        ),
        (
            "MECPLANE_DELETE_STATE_MACHINE_ARN".into(),
            provisioned.delete_arn(),
        ),
        (
            "MECPLANE_UPDATE_STATE_MACHINE_ARN".into(),
            provisioned.update_arn(),
        ),
    ];
    if let Some(profile) = &provisioned.instance_profile {
        env.push(("MECPLANE_NODE_INSTANCE_PROFILE".into(), profile.clone()));
    }
    if let Some(file) = &args.function_env_file {
        env.extend(config::parse_env_lines(&std::fs::read_to_string(file)?));
    }
    let settings = Arc::new(PoolSettings {
        env,
        log_dir: args.log_dir(),
        max_concurrency: args.max_concurrency.max(1),
        region: args.region.clone(),
        account: ACCOUNT_ID.to_string(),
    });
    let names = config::function_names(args, provisioned.functions.keys());
    let binary = args.function_binary();
    let specs = names
        .into_iter()
        .map(|name| {
            let from_template = provisioned
                .functions
                .get(&name)
                .cloned()
                .unwrap_or_default();
            FunctionSpec {
                binary: binary.clone(),
                handler: name.clone(),
                timeout: from_template
                    .timeout
                    .map(Duration::from_secs)
                    .unwrap_or_else(|| args.default_timeout()),
                memory_mb: from_template.memory_size.unwrap_or(DEFAULT_MEMORY_MB),
                env: from_template.environment.into_iter().collect(),
                name,
            }
        })
        .collect();
    Ok(Functions::new(specs, settings))
}
