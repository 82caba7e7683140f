//! Development material: a CA with a server certificate for localhost, and issuer signing keys with
//! their JWKS. For demos and tests; production keys and certificates come from the operator.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::token::mint::Signer;
use crate::token::Alg;

/// Files written by [`certs`].
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `ca.pem`, `server.pem` (leaf + CA) and `server-key.pem` into `dir`; the server
/// certificate is valid for `localhost`, `127.0.0.1` and `::1`.
///
/// # Errors
/// Key generation, signing or file writing failed.
pub fn certs(dir: &Path) -> anyhow::Result<CertFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "jobgate development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let files = CertFiles { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server-key.pem") };
    write(&files.ca, &ca_cert.pem())?;
    write(&files.cert, &format!("{}{}", cert.pem(), ca_cert.pem()))?;
    write(&files.key, &key.serialize_pem())?;
    Ok(files)
}

/// Files written by [`keys`].
pub struct KeyFiles {
    pub signing_key: PathBuf,
    pub jwks: PathBuf,
    pub kid: String,
}

/// Writes `signing-key.pem` (PKCS#8) and `jwks.json` into `dir`; the `kid` is the RFC 7638 thumbprint.
///
/// # Errors
/// Key generation or file writing failed.
pub fn keys(dir: &Path, alg: Alg) -> anyhow::Result<KeyFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (signer, pem) = Signer::generate(alg)?;
    let kid = signer.thumbprint();
    let files = KeyFiles { signing_key: dir.join("signing-key.pem"), jwks: dir.join("jwks.json"), kid };
    write(&files.signing_key, &pem)?;
    write(&files.jwks, &serde_json::to_string_pretty(&signer.jwks(&files.kid))?)?;
    Ok(files)
}

/// Writes through a temporary file and a rename, so a watcher never reads half a file.
///
/// # Errors
/// The write or the rename failed.
pub fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

/// Writes `registry-key.pem` (RSA, PKCS#8) and `registry-cert.pem` (self-signed, for the registry's
/// `rootcertbundle`) into `dir`: the key jobgate signs registry tokens with.
///
/// # Errors
/// Key generation, signing or file writing failed.
pub fn registry_key(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (_, pem) = Signer::generate(Alg::RS256)?;
    let (key, cert) = (dir.join("registry-key.pem"), dir.join("registry-cert.pem"));
    write(&key, &pem)?;
    let signing_key = rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "jobgate registry token issuer");
    write(&cert, &params.self_signed(&signing_key)?.pem())?;
    Ok((key, cert))
}
