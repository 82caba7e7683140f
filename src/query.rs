//! Query strings as the upstream (Rack, git-http-backend) will read them: `&`-separated pairs,
//! `+` as space, percent-decoded names and values. Matching on decoded pairs means an encoded name
//! such as `job%5Ftoken` or `s%65rvice` is seen by jobgate exactly as the upstream will see it.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The decoded `(name, value)` pairs of a raw query string; a pair without `=` has an empty value.
pub fn pairs(query: Option<&str>) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.into_iter().flat_map(|q| q.split('&')).filter(|pair| !pair.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(name), form_decode(value))
    })
}

/// `application/x-www-form-urlencoded` decoding of one name or value.
pub fn form_decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains(['%', '+']) {
        return Cow::Borrowed(raw);
    }
    let plus_free = raw.replace('+', " ");
    Cow::Owned(percent_decode_str(&plus_free).decode_utf8_lossy().into_owned())
}

/// Encodes one name or value for a query string: everything but unreserved characters and the
/// `:`, `/` and `,` of registry scopes is percent-encoded.
pub fn form_encode(raw: &str) -> Cow<'_, str> {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b':')
        .remove(b'/')
        .remove(b',');
    percent_encoding::utf8_percent_encode(raw, KEEP).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_names_and_values() {
        let got: Vec<_> = pairs(Some("a=1&s%65rvice=git%2Dupload-pack&&flag&x=a+b")).collect();
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
        assert_eq!(got, vec![("a", "1"), ("service", "git-upload-pack"), ("flag", ""), ("x", "a b")]);
        assert_eq!(pairs(None).count(), 0);
        assert_eq!(form_encode("repository:a/b:pull,push"), "repository:a/b:pull,push");
        assert_eq!(form_encode("a b&c=d*"), "a%20b%26c%3Dd%2A");
    }
}
