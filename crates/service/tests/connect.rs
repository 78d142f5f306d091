//! A service that sets the bus up itself asks for a production cluster's 3 replicas unless
//! told otherwise: on a single nats-server it refuses to start and says what to set, rather
//! than silently running with one copy of every command and plan.

use tern_service::{ConnectError, ServiceConfig, connect};
use tern_testkit::NatsServer;

#[tokio::test]
async fn a_service_asking_for_three_replicas_of_a_single_server_refuses_to_start_and_names_the_setting() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nats = NatsServer::start().await.expect("nats-server");
    let asr = tern_asr::AsrConfig {
        subscription_id: "00000000-0000-4000-8000-000000000001".into(),
        resource_group: "rg".into(),
        vault: "vault".into(),
        ..tern_asr::AsrConfig::default()
    };
    let mut config = ServiceConfig {
        nats_url: nats.url(),
        asr,
        asr_token: Some("t".into()),
        budget: None,
        ..ServiceConfig::default()
    };
    assert_eq!(config.replicas, 3, "the default is a production cluster's");
    let err = match connect(&config, "tern-test").await {
        Err(e) => e,
        Ok(_) => panic!("three replicas on one server must not be set up"),
    };
    assert!(matches!(err, ConnectError::Topology { replicas: 3, .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("TERN_REPLICAS=1"), "{message}");

    config.replicas = 1;
    connect(&config, "tern-test").await.expect("one replica on one server");
}

#[test]
fn replicas_outside_jetstreams_range_are_refused_by_name() {
    for bad in [0, 6] {
        let config = ServiceConfig { replicas: bad, ..ServiceConfig::default() };
        let err = config.validate().unwrap_err();
        assert!(err.starts_with("replicas must be 1 to 5"), "{err}");
    }
}
