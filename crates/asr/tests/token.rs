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

/// A credential that hands out `tokens` in turn, each valid for an hour, and counts the asks.
#[derive(Debug)]
struct Rotating {
    tokens: Vec<&'static str>,
    asked: AtomicUsize,
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for Rotating {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let n = self.asked.fetch_add(1, Ordering::SeqCst);
        let token = self.tokens[n.min(self.tokens.len() - 1)];
        Ok(azure_core::credentials::AccessToken::new(
            azure_core::credentials::Secret::new(token),
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn a_token_arm_refuses_is_dropped_and_the_next_request_asks_the_credential_again() {
    let mut config = sim_config(1);
    config.token = Some("renewed".into());
    let sim = start_sim(config).await;
    // The cached token says it has an hour left, but ARM no longer takes it (revoked, or this
    // host's clock is off): the 401 must not be repeated for the hour.
    let credential = Arc::new(Rotating { tokens: vec!["revoked", "renewed"], asked: AtomicUsize::new(0) });
    let tokens =
        TokenProvider::from_sources("scope", vec![(tern_asr::CredentialKind::ClientSecret, credential.clone())]);
    let c = AsrClient::new(client_config(&sim), tokens, Arc::new(Unlimited)).unwrap();
    let refused = c.list_items(None, None).await.unwrap_err();
    assert_eq!(refused.class(), ErrorClass::Unauthorized, "{refused:?}");
    c.list_items(None, None).await.expect("the next request carries a new token");
    assert_eq!(credential.asked.load(Ordering::SeqCst), 2);
}
