//! Azure's bearer token goes to the configured ARM endpoint only: a `nextLink` or `Location`
//! pointing at another host (a tampered response, or a forged command's absolute URL) is
//! refused before anything is sent.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{client_config, sim_config, start_sim};
use tern_asr::client::{AsrClient, JobQuery};
use tern_asr::{AsrError, ErrorClass, TokenProvider, Unlimited};

/// A loopback listener that counts the connections it is offered and answers none.
async fn foreign_host() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused_and_that_host_is_never_contacted() {
    let sim = start_sim(sim_config(2)).await;
    let c =
        AsrClient::new(client_config(&sim), TokenProvider::static_token("secret-token"), Arc::new(Unlimited)).unwrap();
    let (elsewhere, contacted) = foreign_host().await;
    let vault = c.config().vault_id();
    let link = format!("{elsewhere}{vault}/replicationJobs?api-version=2025-08-01&$skipToken=1");
    let err = c.list_jobs_page(&JobQuery::default(), Some(&link)).await.unwrap_err();
    assert!(matches!(err, AsrError::InvalidInput(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent, "never retried");
    let message = err.to_string();
    assert!(message.contains(&elsewhere) && message.contains("configured ARM endpoint"), "{message}");
    assert!(!message.contains("skipToken"), "no path or query in the error: {message}");
    assert_eq!(contacted.load(Ordering::SeqCst), 0, "the other host was never contacted");

    // A link on the endpoint itself is followed as before.
    let own = format!("{}{vault}/replicationJobs?api-version=2025-08-01", sim.url());
    c.list_jobs_page(&JobQuery::default(), Some(&own)).await.expect("a link on the endpoint is followed");
}
