//! Error text for people: an error and every cause under it on one line, each said once.

/// `error: cause: cause…`, skipping a cause whose text the line already holds (thiserror messages
/// that embed their `source`, hyper's `client error (Connect)` wrapping the real reason).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: cannot read: {source}")]
    struct Read {
        path: String,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn each_cause_once() {
        let read = Read { path: "k.json".into(), source: std::io::Error::from(std::io::ErrorKind::NotFound) };
        assert_eq!(chain(&read), "k.json: cannot read: entity not found");
        let wrapped = Wrapper(std::io::Error::other("tcp connect error: Connection refused (os error 111)"));
        assert_eq!(chain(&wrapped), "client error (Connect): tcp connect error: Connection refused (os error 111)");
    }
}
