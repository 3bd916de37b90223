//! rustls configurations for validators: TLS 1.3 only, ring's primitives, the attested
//! verifier on both sides, this node's attested certificate, and no session resumption.
//!
//! Resumption is off on both sides (no server session cache, no tickets, no client session
//! store): on a resumed handshake rustls restores the peer's certificate without calling the
//! certificate verifier, so every connection must be a full handshake that the attested
//! verifier checks itself.

use crate::identity::{LocalIdentity, RotatingIdentity};
use crate::verifier::AttestedVerifier;
use rustls::{ClientConfig, ServerConfig};
use std::sync::Arc;

/// The name clients ask for; the evidence, not the name, identifies a validator.
pub const SERVER_NAME: &str = "bulwark-validator";

/// The crypto provider every validator uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn without_resumption_server(mut config: ServerConfig) -> ServerConfig {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config
}

fn without_resumption_client(mut config: ClientConfig) -> ClientConfig {
    config.resumption = rustls::client::Resumption::disabled();
    config
}

/// The accepting side: client certificates are mandatory and attested.
pub fn server_config(
    identity: &LocalIdentity,
    verifier: Arc<AttestedVerifier>,
) -> Result<ServerConfig, rustls::Error> {
    Ok(without_resumption_server(
        ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![identity.cert.clone()], identity.private_key())?,
    ))
}

/// The dialling side: the server's certificate is attested, ours is presented.
pub fn client_config(
    identity: &LocalIdentity,
    verifier: Arc<AttestedVerifier>,
) -> Result<ClientConfig, rustls::Error> {
    Ok(without_resumption_client(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![identity.cert.clone()], identity.private_key())?,
    ))
}

/// The accepting side, presenting whatever `identity` holds at each handshake.
pub fn rotating_server_config(
    identity: Arc<RotatingIdentity>,
    verifier: Arc<AttestedVerifier>,
) -> Result<ServerConfig, rustls::Error> {
    Ok(without_resumption_server(
        ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(identity),
    ))
}

/// The dialling side, presenting whatever `identity` holds at each handshake.
pub fn rotating_client_config(
    identity: Arc<RotatingIdentity>,
    verifier: Arc<AttestedVerifier>,
) -> Result<ClientConfig, rustls::Error> {
    Ok(without_resumption_client(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(identity),
    ))
}
