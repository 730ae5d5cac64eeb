//! TLS through rustls (ring provider): root stores, ALPN, the handshake.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::Config;
use crate::error::BuildError;

/// The TLS options collected by the builder.
#[derive(Clone)]
pub(crate) struct TlsOptions {
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    #[cfg(feature = "webpki-roots")]
    pub(crate) webpki_roots: bool,
    #[cfg(feature = "native-roots")]
    pub(crate) native_roots: bool,
    pub(crate) custom: Option<Arc<ClientConfig>>,
}

impl TlsOptions {
    pub(crate) fn new() -> Self {
        Self {
            extra_roots: Vec::new(),
            #[cfg(feature = "webpki-roots")]
            webpki_roots: true,
            #[cfg(feature = "native-roots")]
            native_roots: true,
            custom: None,
        }
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TlsOptions");
        d.field("extra_roots", &self.extra_roots.len());
        #[cfg(feature = "webpki-roots")]
        d.field("webpki_roots", &self.webpki_roots);
        #[cfg(feature = "native-roots")]
        d.field("native_roots", &self.native_roots);
        d.field("custom_config", &self.custom.is_some());
        d.finish()
    }
}

/// A ready TLS client: the connector, and whether any root is trusted.
#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
    has_roots: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("has_roots", &self.has_roots)
            .finish_non_exhaustive()
    }
}

/// Nothing to verify a server certificate against.
#[derive(Debug, thiserror::Error)]
#[error(
    "no trusted TLS root certificates: enable the webpki-roots or native-roots feature, \
     or add one with Builder::add_root_certificate"
)]
pub(crate) struct NoTrustedRoots;

pub(crate) fn build(opts: &TlsOptions, config: &Config) -> Result<Tls, BuildError> {
    let alpn = alpn_protocols(config);
    if let Some(custom) = &opts.custom {
        let mut c = (**custom).clone();
        if c.alpn_protocols.is_empty() {
            c.alpn_protocols = alpn;
        } else if !config.http2_alpn && !config.http2_prior_knowledge {
            // HTTP/2 is off (`http1_only`, or built without the `http2`
            // feature, where an h2 connection would panic in hyper-util):
            // the config's own list must not offer it.
            c.alpn_protocols.retain(|p| p.as_slice() != b"h2");
            if c.alpn_protocols.is_empty() {
                c.alpn_protocols = alpn;
            }
        }
        return Ok(Tls {
            connector: TlsConnector::from(Arc::new(c)),
            has_roots: true,
        });
    }
    let mut roots = RootCertStore::empty();
    #[cfg(feature = "webpki-roots")]
    if opts.webpki_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    #[cfg(feature = "native-roots")]
    if opts.native_roots {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() && !found.errors.is_empty() {
            let why = found
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return Err(BuildError::NativeRoots(why));
        }
        // Unparsable system certificates are skipped, as browsers do.
        roots.add_parsable_certificates(found.certs);
    }
    for cert in &opts.extra_roots {
        roots.add(cert.clone()).map_err(BuildError::Tls)?;
    }
    let has_roots = !roots.is_empty();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(BuildError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn;
    Ok(Tls {
        connector: TlsConnector::from(Arc::new(c)),
        has_roots,
    })
}

fn alpn_protocols(config: &Config) -> Vec<Vec<u8>> {
    if config.http2_prior_knowledge {
        vec![b"h2".to_vec()]
    } else if config.http2_alpn {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    }
}

impl Tls {
    /// Runs the handshake with `host` over `tcp`; returns the stream and
    /// whether the server picked HTTP/2.
    pub(crate) async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<(TlsStream<TcpStream>, bool), TlsFailure> {
        if !self.has_roots {
            return Err(TlsFailure::Handshake(std::io::Error::other(NoTrustedRoots)));
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(bare.to_owned()).map_err(TlsFailure::Name)?;
        let stream = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(TlsFailure::Handshake)?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok((stream, h2))
    }
}

/// Why a TLS connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsFailure {
    /// The host is not a valid DNS name or IP address for TLS.
    #[error("the host is not a name TLS can verify")]
    Name(#[source] rustls::pki_types::InvalidDnsNameError),
    /// The handshake failed.
    #[error("TLS handshake failed")]
    Handshake(#[source] std::io::Error),
}
