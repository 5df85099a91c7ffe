//! `mecctl dashboard` in a real browser (headless Chromium through chromedriver, WebDriver via
//! fantoccini) against a private local stack: the token URL, the create form (a refused field and
//! a refused `exposed_ports[0].port` each shown next to its control, then a 1+1 cluster with a
//! NodePort range exposed), the cluster page until ACTIVE, its scale action (+1 worker until 3/3
//! ready) and exposed-ports action (a refused row, then the list replaced), the fleet listing it,
//! the typed-name delete, no script errors, no cookie; then the security rules from a plain HTTP
//! client (the one-time token refused a second time, no call without the session header).
//! Screenshots of the pages go to `target/dashboard-screenshots/` (copied to `docs/dashboard/`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::stack::{self, Stack};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_in_a_browser() {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: apt-get install chromium chromium-driver (make setup-apt)"
        );
    }
    let stack = Stack::start(300).await;
    let home = stack.state_dir.join("dashboard-home");
    std::fs::create_dir_all(&home).unwrap();
    let (_dashboard, url) = start_dashboard(&stack, &home).await;
    let base = url.split("/#token=").next().unwrap().to_string();
    let token = url.split("#token=").nth(1).unwrap().to_string();

    let (_driver, browser) = start_browser(&stack.state_dir).await;
    let shots = stack::bin_dir()
        .parent()
        .unwrap()
        .join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    // The browser is closed whatever happens (its Chromium would outlive a panic otherwise).
    let outcome = std::panic::AssertUnwindSafe(drive(&browser, &stack, &url, &base, &shots))
        .catch_unwind()
        .await;
    let _ = browser.close().await;
    let session = match outcome {
        Ok(session) => session,
        Err(panic) => {
            eprintln!("{}", stack.logs());
            std::panic::resume_unwind(panic);
        }
    };

    // The rules, from a client that is not the page.
    let port = base.rsplit(':').next().unwrap();
    let with_session = ("x-dashboard-session", session.clone());
    // The token worked once, for the browser: a second exchange is refused.
    assert_eq!(
        plain(
            &base,
            "POST",
            "/session",
            vec![("x-dashboard-token", token.clone())]
        )
        .await,
        401,
        "the one-time token, reused"
    );
    assert_eq!(
        plain(&base, "GET", "/api/clusters", vec![]).await,
        401,
        "no session header"
    );
    // What a browser sends by itself is no credential.
    assert_eq!(
        plain(
            &base,
            "GET",
            "/api/clusters",
            vec![("cookie", format!("mecctl_dashboard_{port}={token}"))]
        )
        .await,
        401,
        "a cookie"
    );
    assert_eq!(
        plain(&base, "GET", "/api/clusters", vec![with_session.clone()]).await,
        200
    );
    let foreign = ("host", format!("rebound.example:{port}"));
    assert_eq!(
        plain(
            &base,
            "GET",
            "/api/clusters",
            vec![foreign.clone(), with_session.clone()]
        )
        .await,
        403,
        "foreign Host"
    );
    assert_eq!(
        plain(
            &base,
            "POST",
            "/session",
            vec![foreign, ("x-dashboard-token", token)]
        )
        .await,
        403,
        "foreign Host"
    );
    assert_eq!(
        plain(&base, "POST", "/api/reconcile", vec![]).await,
        401,
        "a change without the session header"
    );
}

/// What the user does in the browser; answers the session secret the page holds.
async fn drive(browser: &Client, stack: &Stack, url: &str, base: &str, shots: &Path) -> String {
    // The page spends the token, drops it from the address bar and keeps a session secret in the
    // tab; no cookie is set.
    browser.goto(url).await.unwrap();
    wait_for(browser, "#filter-status", Duration::from_secs(20)).await;
    let here = browser.current_url().await.unwrap();
    assert_eq!(here.query(), None, "{here}");
    assert_eq!(here.path(), "/");
    assert!(
        !here.fragment().unwrap_or_default().contains("token"),
        "{here}"
    );
    let cookies = browser.get_all_cookies().await.unwrap();
    assert!(cookies.is_empty(), "no cookie: {cookies:?}");
    let session = browser
        .execute(
            "return sessionStorage.getItem('mecctl-dashboard-session');",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .expect("the page's session secret")
        .to_string();
    // A reload keeps the tab signed in (the secret is in its sessionStorage).
    browser.refresh().await.unwrap();
    wait_for(browser, "#filter-status", Duration::from_secs(20)).await;

    // Create, by keyboard-reachable controls: a refused field first, shown next to that field.
    browser
        .find(Locator::Id("nav-create"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(browser, "#c-name", Duration::from_secs(5)).await;
    type_into(browser, "#c-name", "web-edge").await;
    type_into(browser, "#c-workers", "999").await;
    type_into(browser, "#c-api_allowed_cidrs", "203.0.113.0/24").await;
    type_into(browser, "#c-tags", "team=edge").await;
    click(browser, "#create-submit").await;
    let error = wait_text(
        browser,
        "#field-workers .field-error",
        |t| !t.is_empty(),
        Duration::from_secs(10),
    )
    .await;
    assert!(error.contains("workers") || error.contains("50"), "{error}");
    assert_eq!(
        browser
            .find(Locator::Css("#c-workers"))
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    assert!(!displayed(browser, "#create-error").await);
    assert_invalid(browser, "#c-workers").await;

    // A nested field: the API's `exposed_ports[0].port` is shown beside that row's port.
    type_into(browser, "#c-workers", "1").await;
    click(browser, "#c-exposed_ports-add").await;
    type_into(browser, "#c-exposed_ports-0-port", "22").await;
    type_into(browser, "#c-exposed_ports-0-cidrs", "10.0.0.0/8").await;
    click(browser, "#create-submit").await;
    let error = wait_text(
        browser,
        "#err-c-exposed_ports-0-port",
        |t| !t.is_empty(),
        Duration::from_secs(10),
    )
    .await;
    assert!(error.contains("22") && error.contains("SSM"), "{error}");
    assert_invalid(browser, "#c-exposed_ports-0-port").await;
    assert!(
        !displayed(browser, "#err-workers").await,
        "the old error is gone"
    );
    assert!(!displayed(browser, "#create-error").await);
    screenshot(browser, shots, "create.png", 1280, 900).await;
    screenshot(browser, shots, "create-375.png", 375, 800).await;

    // Fixed, and sent from the keyboard (Enter in the field submits the form).
    type_into(
        browser,
        "#c-exposed_ports-0-port",
        &format!("30000-32767{}", Key::Enter),
    )
    .await;
    let id = wait_until(Duration::from_secs(15), "the cluster page", || async {
        let here = browser.current_url().await.ok()?;
        here.fragment()?
            .strip_prefix("/clusters/")
            .map(str::to_string)
    })
    .await;
    assert!(id.starts_with("c-"), "{id}");

    // The cluster page follows it live until ACTIVE, with its nodes and stages.
    wait_text(
        browser,
        "#cluster-status",
        |t| t.contains("ACTIVE"),
        Duration::from_secs(240),
    )
    .await;
    let nodes = wait_text(
        browser,
        "#nodes-body",
        |t| t.matches("ready").count() == 2,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        nodes.contains("control-plane") && nodes.contains("worker"),
        "{nodes}"
    );
    let stages = wait_text(
        browser,
        "#stages-body",
        |t| t.contains("verify"),
        Duration::from_secs(10),
    )
    .await;
    assert!(stages.contains("finished"), "{stages}");
    let facts = text_of(browser, ".facts").await;
    assert!(
        facts.contains("30000-32767/tcp from 10.0.0.0/8") && facts.contains("Ubuntu"),
        "{facts}"
    );
    let nodes = text_of(browser, "#nodes-body").await;
    for zone in zones_of(stack, &id).await {
        assert!(nodes.contains(zone.as_str()), "{zone} in {nodes}");
    }

    // Scale by one worker: the update runs and the page shows three nodes ready.
    type_into(browser, "#act-workers", &format!("2{}", Key::Enter)).await;
    wait_text(
        browser,
        "#action-message",
        |t| t.contains("Scale started"),
        Duration::from_secs(10),
    )
    .await;
    wait_text(
        browser,
        "#cluster-status",
        |t| t.contains("UPDATING"),
        Duration::from_secs(10),
    )
    .await;
    wait_text(
        browser,
        "#fact-ready",
        |t| t == "3/3",
        Duration::from_secs(240),
    )
    .await;
    // The root volumes' size and the EBS type the nodes got.
    wait_text(
        browser,
        "#fact-root-volume",
        |t| t == "20 GiB gp3",
        Duration::from_secs(10),
    )
    .await;
    wait_text(
        browser,
        "#cluster-status",
        |t| t.contains("ACTIVE"),
        Duration::from_secs(60),
    )
    .await;
    wait_text(
        browser,
        "#nodes-body",
        |t| t.matches("ready").count() == 3,
        Duration::from_secs(10),
    )
    .await;
    wait_text(
        browser,
        "#updates-body",
        |t| t.contains("scale") && t.contains("Successful"),
        Duration::from_secs(10),
    )
    .await;

    // Exposed ports: a refused entry is shown beside its row, then the whole list is replaced.
    wait_enabled(browser, "#act-ports-save").await;
    click(browser, "#act-ports-add").await;
    type_into(browser, "#act-ports-1-port", "22").await;
    type_into(browser, "#act-ports-1-cidrs", "198.51.100.0/24").await;
    click(browser, "#act-ports-save").await;
    let error = wait_text(
        browser,
        "#err-act-ports-1-port",
        |t| !t.is_empty(),
        Duration::from_secs(10),
    )
    .await;
    assert!(error.contains("22"), "{error}");
    assert_invalid(browser, "#act-ports-1-port").await;
    type_into(browser, "#act-ports-1-port", "8443").await;
    click(browser, "#act-ports-0-remove").await;
    click(browser, "#act-ports-save").await;
    wait_text(
        browser,
        "#action-message",
        |t| t.contains("Exposed ports change started"),
        Duration::from_secs(10),
    )
    .await;
    assert!(!displayed(browser, "#err-act-ports-0-port").await);
    wait_text(
        browser,
        "#fact-exposed-ports",
        |t| t == "8443/tcp from 198.51.100.0/24",
        Duration::from_secs(120),
    )
    .await;
    wait_text(
        browser,
        "#cluster-status",
        |t| t.contains("ACTIVE"),
        Duration::from_secs(60),
    )
    .await;
    let record = stack.api("GET", &format!("/clusters/{id}"), None).await.1;
    assert_eq!(
        record["spec"]["exposed_ports"],
        json!([{"port": 8443, "protocol": "tcp", "cidrs": ["198.51.100.0/24"]}])
    );
    no_script_errors(browser).await;
    screenshot(browser, shots, "cluster.png", 1280, 900).await;
    screenshot(browser, shots, "cluster-375.png", 375, 800).await;

    // The fleet lists it, ACTIVE with 2/2 nodes ready, and the filters find it.
    click(browser, "#nav-fleet").await;
    let row = format!("tr[data-id='{id}']");
    let text = wait_text(
        browser,
        &row,
        |t| t.contains("ACTIVE"),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        text.contains("web-edge") && text.contains("3/3") && text.contains("us-east-1"),
        "{text}"
    );
    // Region / zone: the region, then the distinct zones of the nodes.
    let zones = zones_of(stack, &id).await;
    assert!(
        !zones.is_empty(),
        "the local stack records each node's zone"
    );
    for zone in &zones {
        assert!(text.contains(zone.as_str()), "{zone} in {text}");
    }
    browser
        .find(Locator::Id("filter-status"))
        .await
        .unwrap()
        .select_by_value("FAILED")
        .await
        .unwrap();
    wait_text(
        browser,
        "#clusters-body",
        |t| t.contains("No cluster matches"),
        Duration::from_secs(5),
    )
    .await;
    browser
        .find(Locator::Id("filter-status"))
        .await
        .unwrap()
        .select_by_value("")
        .await
        .unwrap();
    type_into(browser, "#filter-search", "web-").await;
    wait_text(
        browser,
        &row,
        |t| t.contains("web-edge"),
        Duration::from_secs(5),
    )
    .await;
    screenshot(browser, shots, "fleet.png", 1280, 800).await;
    screenshot(browser, shots, "fleet-375.png", 375, 800).await;

    no_script_errors(browser).await;

    // Delete: the button stays disabled until the name is typed.
    browser
        .goto(&format!("{base}/#/clusters/{id}"))
        .await
        .unwrap();
    wait_text(
        browser,
        "#cluster-status",
        |t| t.contains("ACTIVE"),
        Duration::from_secs(10),
    )
    .await;
    let delete = browser.find(Locator::Id("act-delete")).await.unwrap();
    assert!(!delete.is_enabled().await.unwrap());
    type_into(browser, "#act-confirm", "web-edg").await;
    assert!(!delete.is_enabled().await.unwrap());
    type_into(browser, "#act-confirm", "web-edge").await;
    assert!(delete.is_enabled().await.unwrap());
    delete.click().await.unwrap();
    wait_text(
        browser,
        "#cluster-status",
        |t| t.contains("DELETING") || t.contains("DELETED"),
        Duration::from_secs(20),
    )
    .await;
    wait_text(
        browser,
        "#cluster-status",
        |t| t.contains("DELETED"),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(stack.leftovers(&id).await, (vec![], vec![], vec![]));

    no_script_errors(browser).await;
    let cookies = browser.get_all_cookies().await.unwrap();
    assert!(cookies.is_empty(), "no cookie: {cookies:?}");
    session
}

/// No script error (nor CSP violation) since the page loaded: it collects them in
/// `window.dashboardErrors`.
async fn no_script_errors(browser: &Client) {
    let errors = browser
        .execute("return window.dashboardErrors;", vec![])
        .await
        .unwrap();
    assert_eq!(errors, json!([]), "script errors in the page");
}

/// The control is marked invalid for assistive technology too, and described by its error.
async fn assert_invalid(browser: &Client, css: &str) {
    let el = browser.find(Locator::Css(css)).await.unwrap();
    assert_eq!(
        el.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true"),
        "{css}"
    );
    let described = el
        .attr("aria-describedby")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(described.contains("err-"), "{css}: {described}");
}

/// The zones of the cluster's nodes, as its record has them.
async fn zones_of(stack: &Stack, id: &str) -> Vec<String> {
    let record = stack.api("GET", &format!("/clusters/{id}"), None).await.1;
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["zone"].as_str().map(str::to_string))
        .collect()
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn wait_enabled(browser: &Client, css: &str) {
    wait_until(Duration::from_secs(60), css, || async {
        let el = browser.find(Locator::Css(css)).await.ok()?;
        el.is_enabled().await.ok()?.then_some(())
    })
    .await
}

/// `mecctl --env-file <stack> dashboard --port 0`, and the URL it prints.
async fn start_dashboard(stack: &Stack, home: &Path) -> (Child, String) {
    let mut child = Command::new(stack::bin_dir().join("mecctl"))
        .arg("--env-file")
        .arg(stack.state_dir.join("local.env"))
        .args(["dashboard", "--port", "0"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .current_dir(home)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("mecctl dashboard starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the dashboard prints its URL")
    .unwrap();
    let url = line.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/#token="),
        "{url}"
    );
    (child, url)
}

/// chromedriver on a free port, and a headless Chromium session through it.
async fn start_browser(state_dir: &Path) -> (Child, Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let profile: PathBuf = state_dir.join("chromium-profile");
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let webdriver = format!("http://127.0.0.1:{port}");
    let client = wait_until(Duration::from_secs(30), "chromedriver", || async {
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&webdriver)
            .await
            .map_err(|e| eprintln!("chromedriver: {e}"))
            .ok()
    })
    .await;
    (driver, client)
}

/// Polls `probe` every 250 ms until it answers, or panics after `timeout`.
async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_for(browser: &Client, css: &str, timeout: Duration) {
    wait_until(timeout, css, || async {
        browser.find(Locator::Css(css)).await.ok().map(|_| ())
    })
    .await
}

/// The element's text once `ok` holds for it (the last text seen is in the panic otherwise).
async fn wait_text(
    browser: &Client,
    css: &str,
    ok: impl Fn(&str) -> bool,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(el) = browser.find(Locator::Css(css)).await {
            if let Ok(text) = el.text().await {
                if ok(&text) {
                    return text;
                }
                last = text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on {css}; last text: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let el = browser.find(Locator::Css(css)).await.unwrap();
    el.clear().await.unwrap();
    el.send_keys(text).await.unwrap();
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn displayed(browser: &Client, css: &str) -> bool {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap()
}

/// A screenshot of the whole page from its top at `width` px wide (at least `height` px tall; the
/// window is resized back after).
async fn screenshot(browser: &Client, dir: &Path, name: &str, width: u32, height: u32) {
    browser.set_window_size(width, height).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let measure = "return [window.outerHeight - window.innerHeight, \
                   document.documentElement.scrollHeight];";
    let sizes = browser.execute(measure, vec![]).await.unwrap();
    let px = |i: usize| sizes[i].as_u64().unwrap_or(0) as u32;
    let tall = (px(0) + px(1)).clamp(height, 6000);
    if tall > height {
        browser.set_window_size(width, tall).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    browser
        .execute("window.scrollTo(0, 0);", vec![])
        .await
        .unwrap();
    let png = browser.screenshot().await.unwrap();
    std::fs::write(dir.join(name), png).unwrap();
    browser.set_window_size(1280, 900).await.unwrap();
}

/// One request to the dashboard from outside the browser; its status.
async fn plain(base: &str, method: &str, path: &str, headers: Vec<(&str, String)>) -> u16 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}
