//! Key sets: a JWKS document turned into verification keys indexed by `kid`. A key jobgate cannot use
//! (unsupported `kty`, curve, `alg` or size) is skipped and reported; it never poisons the others.
//! [`KeyState`] is what verification reads of an issuer's keys (the current set and its freshness);
//! `crate::keys` keeps it current. This file parses keys and holds them; it does not fetch or watch.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use biscuit::jws::Secret;
use serde_json::Value;

use super::{Alg, KeyKind};

const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;
/// A JWKS larger than this is refused before parsing.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One verification key.
pub struct Key {
    pub kind: KeyKind,
    /// The key's own `alg`, when the JWK pins one.
    pub alg: Option<Alg>,
    /// The key in the form ring verifies against (RSA: PKCS#1 DER; EC: uncompressed point).
    pub(crate) secret: Secret,
}

impl Key {
    /// Whether a token header's `alg` may be used with this key.
    pub fn fits(&self, alg: Alg) -> bool {
        alg.key_kind() == self.kind && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// The usable keys of one issuer, by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, Key>,
    /// One line per skipped key: which key and why.
    pub skipped: Vec<String>,
}

/// Why a whole key set was refused (a refused set never replaces a good one).
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}: larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge(String),
    #[error("{path}:{line}: not a JWKS document: {message}")]
    Syntax { path: String, line: usize, message: String },
    #[error("{path}: no usable key ({skipped})")]
    NoUsableKey { path: String, skipped: String },
}

impl KeySet {
    /// Reads and parses a JWKS file.
    ///
    /// # Errors
    /// Unreadable or oversized file, invalid JSON (with line), or no usable key in it.
    pub fn from_file(path: &Path) -> Result<KeySet, KeySetError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| KeySetError::Read { path: name.clone(), source })?;
        KeySet::from_jwks(&name, &bytes)
    }

    /// Parses a JWKS document; `origin` names it in errors.
    ///
    /// # Errors
    /// See [`KeySet::from_file`].
    pub fn from_jwks(origin: &str, bytes: &[u8]) -> Result<KeySet, KeySetError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(KeySetError::TooLarge(origin.to_owned()));
        }
        let syntax = |line, message: String| KeySetError::Syntax { path: origin.to_owned(), line, message };
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| syntax(e.line(), e.to_string()))?;
        let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
            return Err(syntax(1, "no \"keys\" array".into()));
        };
        let mut set = KeySet::default();
        for (i, jwk) in entries.iter().enumerate() {
            let kid = jwk.get("kid").and_then(Value::as_str);
            let label = kid.map_or_else(|| format!("keys[{i}]"), |k| format!("keys[{i}] (kid {k:?})"));
            match (kid, parse_jwk(jwk)) {
                (None, _) => set.skipped.push(format!("{label}: no kid")),
                (Some(_), Err(why)) => set.skipped.push(format!("{label}: {why}")),
                (Some(kid), Ok(_)) if set.keys.contains_key(kid) => {
                    set.skipped.push(format!("{label}: duplicate kid"));
                }
                (Some(kid), Ok(key)) => {
                    set.keys.insert(kid.to_owned(), key);
                }
            }
        }
        if set.keys.is_empty() {
            let skipped = if set.skipped.is_empty() { "empty set".to_owned() } else { set.skipped.join("; ") };
            return Err(KeySetError::NoUsableKey { path: origin.to_owned(), skipped });
        }
        Ok(set)
    }

    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether any key may verify a token signed with one of `algorithms`.
    pub fn fits_any(&self, algorithms: &[Alg]) -> bool {
        self.keys.values().any(|key| algorithms.iter().any(|alg| key.fits(*alg)))
    }
}

/// Key-set generations are unique across issuers, so a cached token names exactly the set it was
/// verified with.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// One loaded key set.
pub struct LoadedKeys {
    pub set: KeySet,
    /// Unique across issuers; 0 means nothing was ever loaded.
    pub generation: u64,
    digest: [u8; 32],
}

/// An issuer's keys as verification sees them: the current set, swapped whole, and when it was last
/// confirmed (loaded, fetched or answered 304). Fetched sets go stale `max_staleness` seconds after
/// their last confirmation and then fail closed; file and fixed sets never do (the file is the truth).
pub struct KeyState {
    current: ArcSwap<LoadedKeys>,
    confirmed_at: AtomicI64,
    max_staleness: Option<i64>,
}

impl KeyState {
    /// Nothing loaded yet (every token fails closed until the first [`KeyState::install`]).
    pub fn empty(max_staleness: Option<i64>) -> KeyState {
        KeyState {
            current: ArcSwap::from_pointee(LoadedKeys { set: KeySet::default(), generation: 0, digest: [0; 32] }),
            confirmed_at: AtomicI64::new(0),
            max_staleness,
        }
    }

    /// A set that never changes and never goes stale (tests, benches, `jobgate check`).
    pub fn fixed(set: KeySet) -> Arc<KeyState> {
        let state = KeyState::empty(None);
        state.current.store(Arc::new(LoadedKeys {
            set,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            digest: [0; 32],
        }));
        Arc::new(state)
    }

    /// The current key set (hot path: one atomic load).
    pub fn current(&self) -> arc_swap::Guard<Arc<LoadedKeys>> {
        self.current.load()
    }

    /// True when a fetched set was never loaded or not confirmed for longer than its maximum staleness.
    pub fn is_stale(&self, now: i64) -> bool {
        self.max_staleness.is_some_and(|max| {
            self.current.load().generation == 0 || now.saturating_sub(self.confirmed_at.load(Ordering::Relaxed)) > max
        })
    }

    /// The source still serves the set we hold (an unchanged file, a 304).
    pub fn confirm(&self, now: i64) {
        self.confirmed_at.store(now, Ordering::Relaxed);
    }

    /// Parses `bytes` and swaps the set in; identical content only confirms the current one.
    ///
    /// # Errors
    /// The document is not a usable JWKS; the current set stays.
    pub fn install(&self, origin: &str, bytes: &[u8], now: i64) -> Result<Installed, KeySetError> {
        let digest = super::cache::sha256(bytes);
        if self.current.load().digest == digest {
            self.confirm(now);
            return Ok(Installed::Unchanged);
        }
        let set = KeySet::from_jwks(origin, bytes)?;
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        self.current.store(Arc::new(LoadedKeys { set, generation, digest }));
        self.confirm(now);
        Ok(Installed::Updated)
    }
}

/// What [`KeyState::install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    Updated,
    Unchanged,
}

fn parse_jwk(jwk: &Value) -> Result<Key, String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if let Some(usage) = field("use") {
        if usage != "sig" {
            return Err(format!("use {usage:?} is not \"sig\""));
        }
    }
    let alg = match field("alg") {
        None => None,
        Some(name) => Some(Alg::parse(name).ok_or_else(|| format!("unsupported alg {name:?}"))?),
    };
    let b64 = |name: &str| -> Result<Vec<u8>, String> {
        let text = field(name).ok_or_else(|| format!("missing {name}"))?;
        URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| format!("{name} is not base64url"))
    };
    let (kind, secret) = match field("kty") {
        Some("RSA") => {
            let (n, e) = (b64("n")?, b64("e")?);
            let n = strip_leading_zeros(&n);
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(format!("RSA modulus of {bits} bits (need {MIN_RSA_BITS}..={MAX_RSA_BITS})"));
            }
            (KeyKind::Rsa, Secret::PublicKey(rsa_public_key_der(n, strip_leading_zeros(&e))))
        }
        Some("EC") => {
            let (kind, len) = match field("crv") {
                Some("P-256") => (KeyKind::EcP256, 32),
                Some("P-384") => (KeyKind::EcP384, 48),
                other => return Err(format!("unsupported curve {other:?}")),
            };
            let (x, y) = (b64("x")?, b64("y")?);
            if x.len() != len || y.len() != len {
                return Err("EC coordinates of the wrong length".into());
            }
            let point = [&[0x04][..], &x, &y].concat();
            (kind, Secret::PublicKey(point))
        }
        other => return Err(format!("unsupported kty {other:?}")),
    };
    if let Some(alg) = alg {
        if alg.key_kind() != kind {
            return Err(format!("alg {} does not fit the key type", alg.name()));
        }
    }
    Ok(Key { kind, alg, secret })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// DER of PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`, the form
/// ring's RSA verification algorithms take.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    let body = [der_unsigned_integer(n), der_unsigned_integer(e)].concat();
    der_tlv(0x30, &body)
}

fn der_unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|b| b & 0x80 != 0) {
        value.push(0);
    }
    value.extend_from_slice(magnitude);
    der_tlv(0x02, &value)
}

fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let len = value.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let significant = strip_leading_zeros(&bytes);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der_tlv(0x02, &[1]), vec![0x02, 1, 1]);
        assert_eq!(der_tlv(0x30, &[0; 200])[..3], [0x30, 0x81, 200]);
        assert_eq!(der_tlv(0x30, &[0; 300])[..4], [0x30, 0x82, 1, 44]);
        assert_eq!(der_unsigned_integer(&[0x80]), vec![0x02, 2, 0, 0x80]);
    }

    #[test]
    fn unsupported_keys_are_skipped_and_reported() {
        let jwks = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "p256", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "mismatch", "alg": "RS256", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        ]});
        let set = KeySet::from_jwks("test", jwks.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.get("p256").is_some());
        assert_eq!(set.skipped.len(), 6, "{:?}", set.skipped);
        assert!(set.skipped[0].contains("unsupported kty"), "{:?}", set.skipped);
    }

    #[test]
    fn broken_documents_are_refused_with_a_reason() {
        let err = KeySet::from_jwks("k.json", b"{\n\"keys\": [\n,]}").err().unwrap().to_string();
        assert!(err.starts_with("k.json:3:"), "{err}");
        let err = KeySet::from_jwks("k.json", b"{\"keys\": []}").err().unwrap().to_string();
        assert!(err.contains("no usable key"), "{err}");
        let err = KeySet::from_jwks("k.json", b"[]").err().unwrap().to_string();
        assert!(err.contains("no \"keys\" array"), "{err}");
    }
}
