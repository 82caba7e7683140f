//! TLS for the public listener: rustls with the ring provider only, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`, and a certificate resolver behind an `ArcSwap` so a reload swaps the certificate for
//! new connections without touching open ones. A broken or mismatched pair never replaces a good one.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{cert} / {key}: {message}")]
    Pair { cert: String, key: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The one crypto provider jobgate uses (ring; aws-lc is never compiled in).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client configuration trusting `ca_file` (PEM) only, or the system roots without one.
///
/// # Errors
/// An unreadable CA file, naming it.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    client_config_with(ca_file, None)
}

/// A client configuration trusting nothing, for a connector that only ever speaks plain HTTP.
///
/// # Errors
/// The crypto provider offers no protocol version (never).
pub fn unused_client_config() -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// [`client_config`], presenting a client certificate (`(chain, key)` PEM files) when asked.
///
/// # Errors
/// As [`client_config`]; an unreadable client certificate or key, or a pair that does not match.
pub fn client_config_with(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: CA file: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{}: CA file: no usable CERTIFICATE block", path.display()));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let pair = load_certified_key(cert, key).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(
                    pair.cert,
                    PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?,
                )
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))
        }
    }
}

/// Loads a PEM certificate chain and its private key, checking that they belong together.
///
/// # Errors
/// Unreadable or non-PEM files, an empty chain, or a key that does not match the leaf certificate.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let file_error = |path: &Path, message: String| TlsError::File { path: path.display().to_string(), message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no CERTIFICATE block".into()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, format!("no usable private key: {e}")))?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| TlsError::Pair {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        message: e.to_string(),
    })
}

/// The certificates served: the default one, and per DNS name the others (one per host).
#[derive(Debug)]
pub struct Certificates {
    default: Arc<CertifiedKey>,
    /// (lower-case DNS name or `*.suffix` pattern, certificate), in the config's order.
    named: Vec<(String, Arc<CertifiedKey>)>,
}

impl Certificates {
    /// Loads every pair the config names, the default first.
    ///
    /// # Errors
    /// The first pair that does not load (as [`load_certified_key`]).
    pub fn load(files: &crate::config::TlsFiles) -> Result<Certificates, TlsError> {
        let default = Arc::new(load_certified_key(&files.cert, &files.key)?);
        let mut named = Vec::new();
        for pair in &files.certificates {
            let key = Arc::new(load_certified_key(&pair.cert, &pair.key)?);
            named.extend(dns_names(&key).into_iter().map(|name| (name, key.clone())));
        }
        Ok(Certificates { default, named })
    }

    /// The certificate for a client's SNI: an exact name first, then a one-label wildcard, else the
    /// default.
    fn for_name(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(sni) = sni.map(str::to_ascii_lowercase) else { return self.default.clone() };
        let wildcard = sni.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        let exact = self.named.iter().find(|(name, _)| *name == sni);
        let matched = exact.or_else(|| self.named.iter().find(|(name, _)| Some(name) == wildcard.as_ref()));
        matched.map_or_else(|| self.default.clone(), |(_, key)| key.clone())
    }

    fn all(&self) -> impl Iterator<Item = &Arc<CertifiedKey>> {
        std::iter::once(&self.default).chain(self.named.iter().map(|(_, key)| key))
    }
}

/// The DNS names of a certificate's leaf (its subject alternative names).
fn dns_names(key: &CertifiedKey) -> Vec<String> {
    let Some(leaf) = key.cert.first() else { return Vec::new() };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Serves whatever certificates were loaded last, by SNI.
#[derive(Debug)]
pub struct CertResolver(ArcSwap<Certificates>);

impl CertResolver {
    pub fn new(certificates: Certificates) -> Self {
        CertResolver(ArcSwap::from_pointee(certificates))
    }

    /// Loads every pair from disk and swaps them in together; on error the current ones stay.
    ///
    /// # Errors
    /// As [`Certificates::load`].
    pub fn reload(&self, files: &crate::config::TlsFiles) -> Result<(), TlsError> {
        self.0.store(Arc::new(Certificates::load(files)?));
        Ok(())
    }

    /// The earliest `notAfter` of the served leaf certificates, in seconds since the epoch.
    pub fn not_after(&self) -> Option<i64> {
        let certificates = self.0.load();
        certificates
            .all()
            .filter_map(|key| {
                let leaf = key.cert.first()?;
                let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
                Some(cert.validity().not_after.timestamp())
            })
            .min()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().for_name(hello.server_name()))
    }
}

/// The public listener's rustls configuration.
///
/// # Errors
/// Only if rustls refuses the protocol versions (it does not with the ring provider).
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(cert: &Path, key: &Path) -> crate::config::TlsFiles {
        crate::config::TlsFiles { cert: cert.to_owned(), key: key.to_owned(), certificates: Vec::new() }
    }

    #[test]
    fn mismatched_or_broken_pairs_are_refused_and_keep_the_old_certificate() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        crate::tools::generate::certs(a.path()).unwrap();
        crate::tools::generate::certs(b.path()).unwrap();
        let (cert, key) = (a.path().join("server.pem"), a.path().join("server-key.pem"));
        let resolver = CertResolver::new(Certificates::load(&files(&cert, &key)).unwrap());
        let before = resolver.0.load_full();

        let err = resolver.reload(&files(&cert, &b.path().join("server-key.pem"))).unwrap_err().to_string();
        assert!(err.contains("server-key.pem"), "{err}");
        std::fs::write(a.path().join("broken.pem"), "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
        let err = resolver.reload(&files(&a.path().join("broken.pem"), &key)).unwrap_err().to_string();
        assert!(err.contains("broken.pem"), "{err}");
        assert!(Arc::ptr_eq(&before, &resolver.0.load_full()));

        resolver.reload(&files(&b.path().join("server.pem"), &b.path().join("server-key.pem"))).unwrap();
        assert!(!Arc::ptr_eq(&before, &resolver.0.load_full()));
        let not_after = resolver.not_after().unwrap();
        assert!(not_after > crate::clock::unix_now(), "rcgen's default validity lies in the future");
    }

    #[test]
    fn sni_picks_the_certificate_that_names_the_host_else_the_default() {
        let dir = tempfile::tempdir().unwrap();
        crate::tools::generate::certs(dir.path()).unwrap();
        let default = files(&dir.path().join("server.pem"), &dir.path().join("server-key.pem"));
        let pair = |names: &[&str], file: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap()
                .self_signed(&key)
                .unwrap();
            std::fs::write(dir.path().join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{file}-key.pem")), key.serialize_pem()).unwrap();
            crate::config::CertPair {
                cert: dir.path().join(format!("{file}.pem")),
                key: dir.path().join(format!("{file}-key.pem")),
            }
        };
        let registry = pair(&["registry.example.com"], "registry");
        let pages = pair(&["*.pages.example.com"], "pages");
        let certificates =
            Certificates::load(&crate::config::TlsFiles { certificates: vec![registry, pages], ..default }).unwrap();
        let names = |sni: Option<&str>| dns_names(&certificates.for_name(sni));
        assert_eq!(names(Some("REGISTRY.example.com")), ["registry.example.com"]);
        assert_eq!(names(Some("acme.pages.example.com")), ["*.pages.example.com"]);
        assert_eq!(names(Some("a.b.pages.example.com")), ["localhost"], "a wildcard matches one label");
        assert_eq!(names(Some("gitlab.example.com")), ["localhost"]);
        assert_eq!(names(None), ["localhost"]);
    }
}
