//! The one place Fusion's HTTP clients get their TLS set-up.

use std::sync::Arc;

use fusion_core::{Error, Result};

/// A `reqwest` client builder with TLS ready: rustls on the `ring` provider, checking
/// certificates against the platform's roots (on Linux the system store, so a company CA
/// installed there is trusted).
///
/// Every HTTP client in Fusion (the OpenAI client, MCP servers over HTTP) starts here.
/// reqwest's own default would pull in a second cryptography library (aws-lc-rs, a large
/// C build) or, without it, panic at the first request; this keeps one provider, the one
/// the PostgreSQL backend's driver already links, and no process-wide state.
///
/// Fails with [`Error::Config`] when the platform's certificate verifier cannot be set up.
pub fn http_client_builder() -> Result<reqwest::ClientBuilder> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| Error::Config(format!("TLS certificate verification is unavailable: {e}")))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS set-up failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(concat!("fusion/", env!("CARGO_PKG_VERSION"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_builds_without_a_process_wide_provider() {
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
        http_client_builder().unwrap().build().unwrap();
    }
}
