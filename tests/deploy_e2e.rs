//! deploy/ is checked, not just shipped: promtool on the scrape config and the alert rules (with unit
//! tests for every alert), a real Prometheus scraping a real jobgate with deploy's scrape config, the
//! Kubernetes manifests against the Kubernetes schemas, the ConfigMap's config and policy loaded by
//! jobgate itself, and every metric the Grafana dashboard queries defined by jobgate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{curl, echo_upstream, run, Gateway};

fn ok(command: &mut Command) -> String {
    let out = run(command);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_scrape_config_and_every_alert_passes_its_tests() {
    ok(Command::new("promtool").args(["check", "config", "deploy/prometheus/prometheus.yml"]));
    let rules = ok(Command::new("promtool").args(["check", "rules", "deploy/prometheus/alerts.yml"]));
    assert!(rules.contains("9 rules found"), "{rules}");
    let tests = ok(Command::new("promtool").args(["test", "rules", "deploy/prometheus/alerts_test.yml"]));
    assert!(tests.contains("SUCCESS"), "{tests}");
    let rules_text = std::fs::read_to_string("deploy/prometheus/alerts.yml").unwrap();
    let tests_text = std::fs::read_to_string("deploy/prometheus/alerts_test.yml").unwrap();
    for alert in rules_text.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests_text.contains(&format!("alertname: {alert}")), "{alert} has no promtool test");
    }
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let validator =
        std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "target/tools/venv/bin/kubernetes-validate".into());
    let manifests: Vec<PathBuf> = std::fs::read_dir("deploy/kubernetes").unwrap().map(|e| e.unwrap().path()).collect();
    let out = ok(Command::new(&validator).arg("--strict").args(&manifests));
    let kinds = [
        "deployment/jobgate",
        "service/jobgate",
        "configmap/jobgate-config",
        "secret/jobgate-tls",
        "poddisruptionbudget/jobgate",
        "horizontalpodautoscaler/jobgate",
        "statefulset/jobgate-redis",
        "networkpolicy/jobgate-redis",
    ];
    for kind in kinds {
        assert!(out.contains(&format!("passed for resource {kind}")), "{kind} was not validated:\n{out}");
    }
}

#[test]
fn the_configmap_holds_a_config_and_policy_jobgate_loads() {
    let text = std::fs::read_to_string("deploy/kubernetes/configmap.yaml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc).unwrap();
        for (name, content) in value["data"].as_mapping().unwrap() {
            let (name, content) = (name.as_str().unwrap(), content.as_str().unwrap());
            std::fs::write(dir.path().join(name), content).unwrap();
            match name {
                "jobgate.yaml" => {
                    jobgate::config::Config::load(&dir.path().join(name)).unwrap_or_else(|e| panic!("{e}"));
                }
                _ => {
                    jobgate::policy::Policy::from_yaml(Path::new(name), content).unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
    }
}

use serde::Deserialize as _;

#[test]
fn every_dashboard_metric_is_one_jobgate_defines() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/jobgate.json").unwrap()).unwrap();
    let defined = std::fs::read_to_string("src/infra/metrics.rs").unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("jobgate_"))
            {
                let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
                assert!(
                    defined.contains(&format!("\"{base}\"")),
                    "panel {:?} queries {name}, which jobgate does not export",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} metric references found");
}

#[test]
fn a_real_prometheus_scrapes_jobgate_with_the_shipped_config() {
    let dir = tempfile::tempdir().unwrap();
    let gw =
        Gateway::start(dir.path(), &format!("http://127.0.0.1:{}", echo_upstream()), "projects:\n  acme/app: {}\n");
    let token = gw.token("acme/app", 42, false);
    for path in
        ["/acme/app.git/info/refs?service=git-upload-pack", "/acme/secret.git/info/refs?service=git-upload-pack"]
    {
        for _ in 0..3 {
            curl(&gw, &["-H", &format!("JOB-TOKEN: {token}"), &gw.url(path)]);
        }
    }
    // deploy's scrape config, pointed at this jobgate and scraping every second.
    let shipped = std::fs::read_to_string("deploy/prometheus/prometheus.yml").unwrap();
    assert!(shipped.contains("127.0.0.1:9443"), "the shipped target moved; update this test");
    let config = shipped
        .replace("127.0.0.1:9443", &format!("127.0.0.1:{}", gw.admin_port))
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    let prom = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom).unwrap();
    std::fs::write(prom.join("prometheus.yml"), config).unwrap();
    std::fs::copy("deploy/prometheus/alerts.yml", prom.join("alerts.yml")).unwrap();
    let (port, _prometheus) = common::serve_on_free_port(|port| {
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", prom.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", prom.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    });

    let query = |q: &str| -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-s", "--get", "--data-urlencode", &format!("query={q}")])
            .arg(format!("http://127.0.0.1:{port}/api/v1/query"))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    let value =
        |q: &str| -> Option<f64> { query(q)["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok()) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let denied = loop {
        if let Some(v) =
            value("sum(jobgate_requests_total{decision=\"deny\",reason=\"not_in_allowlist\",family=\"git\"})")
        {
            break v;
        }
        assert!(Instant::now() < deadline, "Prometheus never scraped jobgate: {}", query("up"));
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(denied, 3.0);
    assert_eq!(value("sum(jobgate_requests_total{decision=\"allow\",reason=\"granted\",status=\"2xx\"})"), Some(3.0));
    assert_eq!(value("sum(jobgate_requests_total{decision=\"deny\",status=\"4xx\"})"), Some(3.0));
    // Alerts see the first failure: the reload series exist from the start, the gauge says 1.
    assert_eq!(value("count(jobgate_reloads_total{result=\"failed\"} == 0)"), Some(3.0));
    assert_eq!(value("jobgate_config_last_reload_successful"), Some(1.0));
    assert_eq!(value("up{job=\"jobgate\"}"), Some(1.0));
    assert_eq!(value("jobgate_issuer_keys{issuer=\"ci\"}"), Some(1.0));
    assert_eq!(value("count(jobgate_build_info)"), Some(1.0));
    assert!(value("jobgate_certificate_expiry_timestamp_seconds{listener=\"public\"} - time()")
        .is_some_and(|s| s > 86400.0));
}

/// Writes what a recipe's config names below `/etc/jobgate/` (certificates and keys, CA bundles,
/// secrets, a policy folder) into `root`, and the config itself with its paths moved there.
fn recipe_in(root: &Path, config: &str) -> PathBuf {
    let certs = jobgate::tools::generate::certs(&root.join("generated")).unwrap();
    let moved = config
        .replace("/etc/jobgate/", &format!("{}/etc/jobgate/", root.display()))
        .replace("/var/lib/jobgate/", &format!("{}/var/lib/jobgate/", root.display()));
    std::fs::create_dir_all(root.join("var/lib/jobgate")).unwrap();
    std::fs::create_dir_all(root.join("etc/jobgate/policies")).unwrap();
    std::fs::write(root.join("etc/jobgate/policies/default.yaml"), "projects:\n  acme/app: { id: 42 }\n").unwrap();
    for path in config
        .split(|c: char| c.is_whitespace() || ",}\"'".contains(c))
        .filter(|w| w.starts_with("/etc/jobgate/") && w.len() > "/etc/jobgate/".len())
    {
        let target = root.join(path.trim_start_matches('/'));
        if path.ends_with('/') || path.ends_with("policies") {
            continue;
        }
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        let source = if name.contains("ca") && name.ends_with(".crt") {
            Some(&certs.ca)
        } else if name.contains("key") && (name.ends_with(".pem") || name.ends_with(".key")) {
            Some(&certs.key)
        } else if name.ends_with(".pem") || name.ends_with(".crt") {
            Some(&certs.cert)
        } else {
            None
        };
        match source {
            Some(source) => {
                std::fs::copy(source, &target).unwrap();
            }
            None => std::fs::write(&target, "a-secret-of-at-least-thirty-two-bytes-0123456789\n").unwrap(),
        }
    }
    let file = root.join("jobgate.yaml");
    std::fs::write(&file, moved).unwrap();
    file
}

fn jobgate_check(config: &Path) -> String {
    ok(Command::new(env!("CARGO_BIN_EXE_jobgate")).args(["check", "--offline", "--config"]).arg(config))
}

#[test]
fn the_omnibus_and_helm_recipes_load_with_jobgate_check_and_their_manifests_validate() {
    let dir = tempfile::tempdir().unwrap();
    let omnibus = std::fs::read_to_string("deploy/omnibus/jobgate.yaml").unwrap();
    let out = jobgate_check(&recipe_in(&dir.path().join("omnibus"), &omnibus));
    assert!(out.contains("ok: "), "{out}");
    for needed in
        ["registry_auth: { tokens: gitlab }", "unix:/var/opt/gitlab/gitlab-workhorse/sockets/socket", "passthrough:"]
    {
        assert!(omnibus.contains(needed), "the Omnibus recipe lost {needed:?}");
    }
    let rb = std::fs::read_to_string("deploy/omnibus/gitlab.rb").unwrap();
    for setting in [
        "nginx['enable'] = false",
        "registry_nginx['enable'] = false",
        "web_server['external_users'] = ['jobgate']",
        "puma['port'] = 8080",
        "registry['registry_http_addr'] = \"127.0.0.1:5000\"",
    ] {
        assert!(rb.contains(setting), "gitlab.rb lost {setting:?}");
    }
    // The Helm recipe: its ConfigMap's config loads, and it validates with deploy/kubernetes/'s manifests.
    let configmap = std::fs::read_to_string("deploy/helm/configmap.yaml").unwrap();
    let value: serde_yaml::Value = serde_yaml::from_str(&configmap).unwrap();
    let config = value["data"]["jobgate.yaml"].as_str().unwrap();
    let out = jobgate_check(&recipe_in(&dir.path().join("helm"), config));
    assert!(out.contains("ok: "), "{out}");
    let validator =
        std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "target/tools/venv/bin/kubernetes-validate".into());
    let out = ok(Command::new(&validator).args(["--strict", "deploy/helm/configmap.yaml"]));
    assert!(out.contains("passed for resource configmap/jobgate-config"), "{out}");
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string("deploy/helm/values.yaml").unwrap()).unwrap();
    assert_eq!(values["global"]["ingress"]["enabled"], serde_yaml::Value::Bool(false), "jobgate is the entry");
    assert_eq!(
        values["global"]["workhorse"]["tls"]["enabled"],
        serde_yaml::Value::Bool(true),
        "jobgate's https upstream"
    );
}
