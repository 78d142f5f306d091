//! `tern up` as a user runs it: the real binaries, a real nats-server, the simulator over HTTP.

mod common;

use std::time::Duration;

use tern_proto::{NameList, PlanSpec, PreflightRequest, Readiness, Selection, selection};

#[tokio::test]
async fn tern_up_runs_the_stack_writes_its_endpoints_and_stops_cleanly_on_sigterm() {
    let mut up =
        common::Up::start(&["--vms", "20", "--unhealthy-every", "10", "--fail", "vm-00004:failover:28031"]).await;
    let endpoints = up.endpoints.clone();
    let file = up.data_dir().join("endpoints.json");
    for key in ["nats_url", "planner_addr", "sim_url", "vault_id"] {
        assert!(endpoints[key].as_str().is_some_and(|v| !v.is_empty()), "{key} in {endpoints}");
    }
    assert_eq!(endpoints["vaults"], serde_json::json!([endpoints["vault_id"]]), "one vault by default: {endpoints}");

    // The planner answers, reads the demo estate and sees the unhealthy VMs.
    // Only with the token tern up generated: the API is closed to anyone else.
    // Over TLS only: the certificate tern up generated, which endpoints.json names.
    let addr = endpoints["planner_addr"].as_str().unwrap();
    let ca = std::path::PathBuf::from(endpoints["api_ca_file"].as_str().expect("endpoints.json names the API's CA"));
    let token = std::fs::read_to_string(endpoints["api_token_file"].as_str().unwrap()).unwrap();
    let plaintext = match tern_testkit::stack::planner_client(addr, Some(&token)).await {
        Ok(mut grpc) => grpc.get_plan(tern_proto::GetPlanRequest::default()).await.err().map(|s| s.code()),
        Err(_) => Some(tonic::Code::Unavailable),
    };
    assert!(
        !matches!(plaintext, None | Some(tonic::Code::NotFound | tonic::Code::InvalidArgument)),
        "the API answered a plaintext call: {plaintext:?}"
    );
    let anonymous = tern_testkit::stack::planner_client_tls(addr, None, Some(&ca))
        .await
        .unwrap()
        .get_plan(tern_proto::GetPlanRequest::default())
        .await;
    assert_eq!(anonymous.unwrap_err().code(), tonic::Code::Unauthenticated);
    let mut grpc = tern_testkit::stack::planner_client_tls(addr, Some(&token), Some(&ca)).await.unwrap();

    // NATS admits no anonymous client; the CLI reads events as the events-reader.
    let nats_url = endpoints["nats_url"].as_str().unwrap();
    assert!(tern_bus::Bus::connect(nats_url, "anonymous").await.is_err(), "NATS took an anonymous client");
    assert!(endpoints["nats_credentials"].as_str().is_some_and(|f| f.ends_with("events-reader.nk")), "{endpoints}");
    let names: Vec<String> = (1..=20).map(|i| format!("vm-{i:05}")).collect();
    let report = grpc
        .preflight(PreflightRequest {
            spec: Some(PlanSpec {
                vault_id: endpoints["vault_id"].as_str().unwrap().to_owned(),
                selection: Some(Selection { by: Some(selection::By::VmNames(NameList { values: names })) }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let blocked = report.vms.iter().filter(|v| v.readiness == Readiness::Blocked as i32).count();
    assert_eq!((report.vms.len(), blocked), (20, 2), "{report:?}");

    // The CLI finds the stack through the data dir.
    let tern = |args: &[&str]| {
        let out = up.tern(args);
        (out.code, out.text())
    };
    let (code, text) = tern(&["plan", "preflight", "--all-ready"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("vm-00010") && text.contains("blocked"), "{text}");
    let (code, text) = tern(&["plan", "submit", "--vm", "vm-00001", "--vm", "vm-00002", "--watch"]);
    assert_eq!(code, Some(0), "every VM succeeded: {text}");
    assert!(text.contains("completed") && text.contains("2 succeeded"), "{text}");
    assert!(text.contains("RPO") && text.contains("RTO"), "the summary reports RPO and RTO: {text}");
    // Bad input: exit 2 with a message that names the problem.
    let (code, text) = tern(&["plan", "submit", "--vm", "vm-00003", "--recovery-point", "yesterday"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("yesterday"), "{text}");
    let (code, text) = tern(&["plan", "submit", "--vm", "vm-00010", "--vm", "vm-00005"]);
    assert_eq!(code, Some(4), "refused by preflight: it blocks vm-00010 and the plan needs consent: {text}");
    assert!(text.contains("vm-00010") && text.contains("proceed_with_ready"), "{text}");
    // A plan where some VMs do not make it: exit 1, and the summary names them.
    let (code, text) =
        tern(&["plan", "submit", "--vm", "vm-00010", "--vm", "vm-00004", "--proceed-with-ready", "--watch"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("vm-00010"), "{text}");

    // SIGTERM stops every process and removes the endpoints file.
    let reader_token = std::fs::read_to_string(endpoints["api_reader_token_file"].as_str().unwrap()).unwrap();
    let mut secrets = vec![token.trim().to_owned(), reader_token.trim().to_owned()];
    for entry in std::fs::read_dir(up.data_dir().join("secrets/nats")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "nk") {
            secrets.push(std::fs::read_to_string(&path).unwrap().trim().to_owned());
        }
    }
    assert_eq!(secrets.len(), 2 + tern_bus::Identity::ALL.len(), "an nkey per NATS identity");
    let key = std::fs::read_to_string(ca.with_extension("key")).unwrap();
    secrets.push(key.lines().nth(1).expect("a PEM key").to_owned());
    let status = up.stop().await;
    assert!(status.success(), "{status}");
    // Nothing any process of the stack logged holds a secret: API tokens, nkey seeds, TLS key.
    let mut logs = 0;
    for entry in std::fs::read_dir(up.data_dir().join("logs")).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{} holds a secret of the stack", path.display());
        }
        logs += 1;
    }
    assert!(logs >= 5, "every process has a log ({logs})");
    assert!(!file.exists(), "endpoints.json is removed when the stack stops");
    let planner = endpoints["planner_addr"].as_str().unwrap().to_owned();
    let gone = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(&planner)).await;
    assert!(!matches!(gone, Ok(Ok(_))), "the planner still listens after tern up stopped");
    let text = common::tern_in(up.data_dir(), &["plan", "list"]);
    let (code, text) = (text.code, text.text());
    assert_eq!(code, Some(3), "no stack to reach: {text}");
    assert!(text.contains("tern up"), "says how to get a stack: {text}");
}
