//! Tokens for Azure Resource Manager: a credential chain resolved the way Azure's own tools do
//! it, a static token for the simulator, and a cache that refreshes ahead of expiry.
//!
//! Secrets never reach logs or `Debug` output: tokens and client secrets live in
//! `azure_core::credentials::Secret` (whose `Debug` is redacted), and every type here prints
//! only which credential it is.

use std::fmt;
use std::sync::{Arc, Mutex};

use azure_core::credentials::{AccessToken, Secret, SecretBytes, TokenCredential, TokenRequestOptions};
use azure_identity::{
    ClientCertificateCredential, ClientCertificateCredentialOptions, ClientSecretCredential, DeveloperToolsCredential,
    ManagedIdentityCredential, WorkloadIdentityCredential,
};
use time::OffsetDateTime;

use crate::error::AsrError;

/// Refresh a cached token this long before it expires.
const REFRESH_AHEAD: time::Duration = time::Duration::minutes(5);

/// The kinds of credential, in the order the chain tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// A fixed bearer token (the simulator, or a token obtained elsewhere).
    StaticToken,
    /// Service principal: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`.
    ClientSecret,
    /// Service principal: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_CERTIFICATE_PATH`
    /// (PKCS#12, optional `AZURE_CLIENT_CERTIFICATE_PASSWORD`).
    ClientCertificate,
    /// Kubernetes workload identity: `AZURE_FEDERATED_TOKEN_FILE` (+ tenant and client id).
    WorkloadIdentity,
    /// The managed identity of the VM, App Service or container (`AZURE_CLIENT_ID` picks a
    /// user-assigned one).
    ManagedIdentity,
    /// The developer's Azure CLI (then Azure Developer CLI) login.
    DeveloperTools,
}

/// Which credentials the environment calls for, in order: service principal (secret, else
/// certificate), workload identity, managed identity, developer tools. `TERN_AZURE_TOKEN`
/// short-circuits the chain with a static token.
pub fn chain_from_env(env: impl Fn(&str) -> Option<String>) -> Vec<CredentialKind> {
    let has = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
    if has("TERN_AZURE_TOKEN") {
        return vec![CredentialKind::StaticToken];
    }
    let mut chain = Vec::new();
    let principal = has("AZURE_TENANT_ID") && has("AZURE_CLIENT_ID");
    if principal && has("AZURE_CLIENT_SECRET") {
        chain.push(CredentialKind::ClientSecret);
    } else if principal && has("AZURE_CLIENT_CERTIFICATE_PATH") {
        chain.push(CredentialKind::ClientCertificate);
    }
    if principal && has("AZURE_FEDERATED_TOKEN_FILE") {
        chain.push(CredentialKind::WorkloadIdentity);
    }
    chain.push(CredentialKind::ManagedIdentity);
    chain.push(CredentialKind::DeveloperTools);
    chain
}

/// A fixed token, valid for a year.
pub struct StaticTokenCredential {
    token: Secret,
}

impl StaticTokenCredential {
    /// Wraps `token`.
    pub fn new(token: impl Into<String>) -> Arc<Self> {
        Arc::new(Self { token: Secret::new(token.into()) })
    }
}

impl fmt::Debug for StaticTokenCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticTokenCredential(<redacted>)")
    }
}

#[async_trait::async_trait]
impl TokenCredential for StaticTokenCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(self.token.clone(), OffsetDateTime::now_utc() + time::Duration::days(365)))
    }
}

struct Cached {
    token: Secret,
    expires_on: OffsetDateTime,
}

/// Hands out bearer tokens for one scope from a chain of credentials, cached until shortly
/// before they expire. Once a credential of the chain works it is used first from then on.
pub struct TokenProvider {
    scope: String,
    sources: Vec<(CredentialKind, Arc<dyn TokenCredential>)>,
    preferred: Mutex<Option<usize>>,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("scope", &self.scope)
            .field("sources", &self.kinds())
            .field("token", &"<redacted>")
            .finish()
    }
}

impl TokenProvider {
    /// A provider for a fixed token (the simulator).
    pub fn static_token(token: impl Into<String>) -> Self {
        Self::from_sources("static", vec![(CredentialKind::StaticToken, StaticTokenCredential::new(token))])
    }

    /// A provider from an explicit list of credentials.
    pub fn from_sources(scope: &str, sources: Vec<(CredentialKind, Arc<dyn TokenCredential>)>) -> Self {
        Self { scope: scope.to_owned(), sources, preferred: Mutex::new(None), cache: tokio::sync::Mutex::new(None) }
    }

    /// The chain the process environment calls for (see [`chain_from_env`]).
    pub fn from_env(scope: &str) -> Result<Self, AsrError> {
        Self::from_env_with(scope, |k| std::env::var(k).ok())
    }

    /// The chain a given environment calls for. Credentials that cannot even be constructed
    /// (e.g. a malformed tenant id) are an error naming the variable, not silently skipped.
    pub fn from_env_with(scope: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, AsrError> {
        crate::install_tls_provider();
        let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let auth = |what: &str, e: azure_core::Error| AsrError::Auth(format!("{what}: {e}"));
        let mut sources: Vec<(CredentialKind, Arc<dyn TokenCredential>)> = Vec::new();
        for kind in chain_from_env(&env) {
            let credential: Arc<dyn TokenCredential> = match kind {
                CredentialKind::StaticToken => StaticTokenCredential::new(var("TERN_AZURE_TOKEN").unwrap_or_default()),
                CredentialKind::ClientSecret => ClientSecretCredential::new(
                    &var("AZURE_TENANT_ID").unwrap_or_default(),
                    var("AZURE_CLIENT_ID").unwrap_or_default(),
                    Secret::new(var("AZURE_CLIENT_SECRET").unwrap_or_default()),
                    None,
                )
                .map_err(|e| auth("AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET", e))?,
                CredentialKind::ClientCertificate => {
                    let path = var("AZURE_CLIENT_CERTIFICATE_PATH").unwrap_or_default();
                    let bytes = std::fs::read(&path)
                        .map_err(|e| AsrError::Auth(format!("AZURE_CLIENT_CERTIFICATE_PATH {path:?}: {e}")))?;
                    let options = ClientCertificateCredentialOptions {
                        password: var("AZURE_CLIENT_CERTIFICATE_PASSWORD").map(Secret::new),
                        ..Default::default()
                    };
                    ClientCertificateCredential::new(
                        var("AZURE_TENANT_ID").unwrap_or_default(),
                        var("AZURE_CLIENT_ID").unwrap_or_default(),
                        SecretBytes::new(bytes),
                        Some(options),
                    )
                    .map_err(|e| auth("AZURE_CLIENT_CERTIFICATE_PATH", e))?
                }
                CredentialKind::WorkloadIdentity => {
                    WorkloadIdentityCredential::new(None).map_err(|e| auth("AZURE_FEDERATED_TOKEN_FILE", e))?
                }
                CredentialKind::ManagedIdentity => {
                    ManagedIdentityCredential::new(None).map_err(|e| auth("managed identity", e))?
                }
                CredentialKind::DeveloperTools => {
                    DeveloperToolsCredential::new(None).map_err(|e| auth("developer tools", e))?
                }
            };
            sources.push((kind, credential));
        }
        Ok(Self::from_sources(scope, sources))
    }

    /// The kinds of credential in the chain, in order.
    pub fn kinds(&self) -> Vec<CredentialKind> {
        self.sources.iter().map(|(k, _)| *k).collect()
    }

    /// Forgets the cached token: ARM refused it (401), so the next [`Self::bearer`] asks the
    /// credential again.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    /// A bearer token for the scope (cached; refreshed five minutes before it expires).
    pub async fn bearer(&self) -> Result<String, AsrError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && c.expires_on - OffsetDateTime::now_utc() > REFRESH_AHEAD
        {
            return Ok(c.token.secret().to_owned());
        }
        let preferred = *self.preferred.lock().unwrap_or_else(|e| e.into_inner());
        let order: Vec<usize> =
            preferred.into_iter().chain((0..self.sources.len()).filter(|i| Some(*i) != preferred)).collect();
        let mut failures = Vec::new();
        for i in order {
            let (kind, credential) = &self.sources[i];
            match credential.get_token(&[self.scope.as_str()], None).await {
                Ok(token) => {
                    *self.preferred.lock().unwrap_or_else(|e| e.into_inner()) = Some(i);
                    let bearer = token.token.secret().to_owned();
                    *cache = Some(Cached { token: token.token, expires_on: token.expires_on });
                    return Ok(bearer);
                }
                Err(e) => failures.push(format!("{kind:?}: {e}")),
            }
        }
        Err(AsrError::Auth(if failures.is_empty() {
            "no credential configured".into()
        } else {
            format!("no credential in the chain produced a token ({})", failures.join("; "))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "00000000-0000-0000-0000-00000000c11e";

    #[test]
    fn the_chain_follows_the_environment_like_azure_tools_do() {
        use CredentialKind::*;
        assert_eq!(chain_from_env(env(&[])), [ManagedIdentity, DeveloperTools]);
        let sp = env(&[("AZURE_TENANT_ID", TENANT), ("AZURE_CLIENT_ID", CLIENT), ("AZURE_CLIENT_SECRET", "s")]);
        assert_eq!(chain_from_env(sp), [ClientSecret, ManagedIdentity, DeveloperTools]);
        let cert = env(&[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT),
            ("AZURE_CLIENT_CERTIFICATE_PATH", "/c.pfx"),
        ]);
        assert_eq!(chain_from_env(cert), [ClientCertificate, ManagedIdentity, DeveloperTools]);
        let wi = env(&[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/t"),
        ]);
        assert_eq!(chain_from_env(wi), [WorkloadIdentity, ManagedIdentity, DeveloperTools]);
        let half = env(&[("AZURE_CLIENT_ID", CLIENT), ("AZURE_CLIENT_SECRET", "s")]);
        assert_eq!(
            chain_from_env(half),
            [ManagedIdentity, DeveloperTools],
            "a secret without a tenant is no service principal"
        );
        assert_eq!(chain_from_env(env(&[("TERN_AZURE_TOKEN", "t"), ("AZURE_CLIENT_SECRET", "s")])), [StaticToken]);
    }

    #[test]
    fn the_provider_builds_the_chain_and_never_prints_secrets() {
        let provider = TokenProvider::from_env_with(
            "https://management.azure.com/.default",
            env(&[("AZURE_TENANT_ID", TENANT), ("AZURE_CLIENT_ID", CLIENT), ("AZURE_CLIENT_SECRET", "hunter2-secret")]),
        )
        .expect("builds");
        assert_eq!(
            provider.kinds(),
            [CredentialKind::ClientSecret, CredentialKind::ManagedIdentity, CredentialKind::DeveloperTools]
        );
        let printed = format!("{provider:?} {:?}", StaticTokenCredential::new("top-secret-token"));
        assert!(!printed.contains("hunter2") && !printed.contains("top-secret"), "{printed}");
        let bad = TokenProvider::from_env_with(
            "s",
            env(&[("AZURE_TENANT_ID", "not a tenant!"), ("AZURE_CLIENT_ID", CLIENT), ("AZURE_CLIENT_SECRET", "x")]),
        );
        assert!(bad.unwrap_err().to_string().contains("AZURE_TENANT_ID"), "a malformed tenant id is named");
    }

    #[tokio::test]
    async fn tokens_are_cached_and_the_working_credential_is_preferred() {
        #[derive(Debug)]
        struct Failing;
        #[async_trait::async_trait]
        impl TokenCredential for Failing {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<TokenRequestOptions<'_>>,
            ) -> azure_core::Result<AccessToken> {
                Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "no managed identity here",
                ))
            }
        }
        let provider = TokenProvider::from_sources(
            "scope",
            vec![
                (CredentialKind::ManagedIdentity, Arc::new(Failing)),
                (CredentialKind::StaticToken, StaticTokenCredential::new("tok")),
            ],
        );
        assert_eq!(provider.bearer().await.unwrap(), "tok");
        assert_eq!(*provider.preferred.lock().unwrap(), Some(1));
        assert_eq!(provider.bearer().await.unwrap(), "tok");
        let none = TokenProvider::from_sources("scope", vec![(CredentialKind::ManagedIdentity, Arc::new(Failing))]);
        let err = none.bearer().await.unwrap_err().to_string();
        assert!(err.contains("ManagedIdentity") && err.contains("no managed identity here"), "{err}");
    }
}
