use super::*;
use crate::edge::body_scan::credential_name;

fn request(method: &str, path: &str, content_type: Option<&str>) -> Parts {
    let mut builder = http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    builder.body(()).unwrap_or_else(|_| unreachable!()).into_parts().0
}

#[test]
fn the_bodies_rails_reads_params_from_are_read_on_the_api_only() {
    let cases = [
        (
            "POST",
            "/api/v4/projects/1/trigger/pipeline",
            Some("multipart/form-data; boundary=xyz"),
            Some(Kind::Multipart(b"--xyz".to_vec())),
        ),
        ("POST", "/api/v4/projects/1/trigger/pipeline", Some("application/x-www-form-urlencoded"), Some(Kind::Form)),
        ("POST", "/api/v4/projects/1/trigger/pipeline", None, Some(Kind::Untyped { post: true })),
        ("POST", "//api/v4/projects/1/trigger/pipeline", None, Some(Kind::Untyped { post: true })),
        ("POST", "/./api/v4/projects/1/trigger/pipeline", Some("application/json"), Some(Kind::Json)),
        ("PUT", "/api/v4/projects/1/variables/x", Some("application/json; charset=utf-8"), Some(Kind::Json)),
        ("POST", "/api/v4/x", Some("application/vnd.api+json"), Some(Kind::Json)),
        ("PUT", "/api/v4/projects/1/packages/generic/a/1/a.bin", Some("application/octet-stream"), None),
        ("PUT", "/api/v4/projects/1/packages/generic/a/1/a.bin", None, Some(Kind::Untyped { post: false })),
        ("GET", "/api/v4/projects/1", None, None),
        ("POST", "/acme/app.git/git-receive-pack", None, None),
    ];
    for (method, path, ct, want) in cases {
        assert_eq!(kind(&request(method, path, ct)), Ok(want), "{method} {path} {ct:?}");
    }
    assert!(kind(&request("POST", "/api/v4/x", Some("multipart/form-data"))).is_err());
    assert!(kind(&request("POST", "/api/v4/x", Some("multipart/form-data; boundary=a; boundary=b"))).is_err());
    // An untyped body is JSON when it begins like an object; else a POST's is a form, a PUT's nothing.
    for (kind, head, ended, want) in [
        (Kind::Untyped { post: false }, &b" \n{\"a\":1}"[..], true, Some(Kind::Json)),
        (Kind::Untyped { post: true }, b"{", false, Some(Kind::Json)),
        (Kind::Untyped { post: true }, b"token=x", false, Some(Kind::Form)),
        (Kind::Untyped { post: false }, b"\x7fELF", false, None),
        // White space so far: JSON may follow, so it is read as JSON until the body says otherwise.
        (Kind::Untyped { post: false }, b" \r\n ", false, Some(Kind::Json)),
        (Kind::Untyped { post: false }, b" ", true, None),
        (Kind::Form, b"{", false, Some(Kind::Form)),
    ] {
        assert_eq!(kind.for_body(head, ended), want, "{kind:?} {head:?} {ended}");
    }
    assert_eq!(
        kind(&request("POST", "/api/v4/x", Some("application/x-www-form-urlencoded, text/plain"))),
        Ok(Some(Kind::Form)),
        "Rack stops at a comma"
    );
    let mut twice = request("POST", "/api/v4/x", Some("text/plain"));
    twice.headers.append(header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-www-form-urlencoded"));
    assert!(kind(&twice).is_err(), "two Content-Type headers");
}

#[test]
fn credentials_are_found_in_form_json_and_multipart_bodies() {
    assert_eq!(
        params(&Kind::Form, b"ref=main&token=glcbt-abc&variables[X]=1&job_token[]=x").unwrap_or_default(),
        ["token=glcbt%2Dabc", "job%5Ftoken%5B%5D=x"]
    );
    assert_eq!(params(&Kind::Json, br#"{"ref":"main","job_token":"a b"}"#).unwrap_or_default(), ["job%5Ftoken=a%20b"]);
    assert!(params(&Kind::Json, br#"{"job_token": 5}"#).is_err());
    assert!(params(&Kind::Json, b"{not json").is_err());
    let body = b"--xyz\r\nContent-Disposition: form-data; name=\"ref\"\r\n\r\nmain\r\n--xyz\r\ncontent-disposition: form-data; name=\"token\"\r\n\r\nglcbt-abc\r\n--xyz--\r\n";
    assert_eq!(params(&Kind::Multipart(b"--xyz".to_vec()), body).unwrap_or_default(), ["token=glcbt%2Dabc"]);
}

#[test]
fn a_credential_part_is_found_however_the_body_is_cut_into_chunks() {
    let body = b"preamble\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tgz\"\r\nContent-Type: application/gzip\r\n\r\n--b-not-a-delimiter\r\n\r\n--b\r\nContent-Disposition: form-data; name=job_token\r\n\r\nsecret\r\n--b--";
    for split in 0..body.len() {
        let mut scanner = Scanner::new(b"--b".to_vec(), true);
        scanner.feed(&body[..split]).unwrap_or_else(|e| panic!("{split}: {e}"));
        scanner.feed(&body[split..]).unwrap_or_else(|e| panic!("{split}: {e}"));
        assert_eq!(scanner.found, ["job%5Ftoken=secret"], "split at {split}");
        let mut streaming = Scanner::new(b"--b".to_vec(), false);
        let first = streaming.feed(&body[..split]);
        assert!(
            first.is_err() || streaming.feed(&body[split..]).is_err(),
            "split at {split}: not capturing, the part is refused"
        );
    }
}

#[test]
fn a_delimiter_rack_finds_in_the_preamble_or_after_the_close_is_found_too() {
    let body = b"x--b\r\nContent-Disposition: form-data; name=token\r\n\r\nglcbt-1\r\n--b--xyz\r\n--b\r\nContent-Disposition: form-data; name=private_token\r\n\r\np\r\n--b--\r\n";
    assert_eq!(
        params(&Kind::Multipart(b"--b".to_vec()), body).unwrap_or_default(),
        ["token=glcbt%2D1", "private%5Ftoken=p"]
    );
}

#[test]
fn json_credential_keys_are_found_at_the_top_level_only_however_the_body_is_cut() {
    let body = br#"{"name":"pkg","versions":{"1.0":{"token":"nested"}},"job_token":"glcbt-\u0041b","_attachments":{"a":{"data":"x\"token\":"}}}"#;
    for split in 0..body.len() {
        let mut scanner = JsonScanner::new(true);
        scanner.feed(&body[..split]).unwrap_or_else(|e| panic!("{split}: {e}"));
        scanner.feed(&body[split..]).unwrap_or_else(|e| panic!("{split}: {e}"));
        assert_eq!(scanner.found, ["job%5Ftoken=glcbt%2DAb"], "split at {split}");
        let mut streaming = JsonScanner::new(false);
        let first = streaming.feed(&body[..split]);
        assert!(
            first.is_err() || streaming.feed(&body[split..]).is_err(),
            "split at {split}: not capturing, the key is refused"
        );
    }
    let mut scanner = JsonScanner::new(true);
    assert!(scanner.feed(br#"{"token": 5}"#).is_err(), "a credential that is not a string");
    let mut scanner = JsonScanner::new(true);
    scanner.feed(br#"[{"token":"a"}]"#).unwrap_or_default();
    assert!(scanner.found.is_empty(), "a top-level array has no params");
}

#[test]
fn names_rack_would_read_inside_a_filename_or_oddly_spelled_count_too() {
    for head in [
        "Content-Disposition: form-data; filename=\"x; name=job_token\"",
        "Content-Disposition: form-data; name=\"job_token[]\"",
        "CONTENT-DISPOSITION: form-data; NAME=private_token",
    ] {
        assert!(credential_name(head).is_some(), "{head}");
    }
    for head in
        ["Content-Disposition: form-data; name=\"ref\"; filename=\"token\"", "Content-Type: text/plain; name=token"]
    {
        assert_eq!(credential_name(head), None, "{head}");
    }
}
