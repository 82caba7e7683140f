//! The decision view: one server-rendered page on the admin listener (`GET /-/decisions`) with the
//! recent decisions, filters by project, job and reason, the access matrix (job project × target)
//! and a form that runs `explain` for a pasted request against the live policy
//! (`POST /-/decisions/explain`). No script, no external asset; the page's policy forbids both.
//! Everything shown is escaped; the pasted token is never written back (nor a credential parameter of
//! the pasted URL), nor anything derived from it but what `explain` prints (which never holds it).

use std::fmt::Write;
use std::time::SystemTime;

use crate::enforce::explain::Explained;
use crate::infra::audit::decisions::{Filter, View};
use crate::reason::Reason;

/// Decisions shown at most (after filtering).
pub const SHOWN: usize = 200;
/// Matrix rows and columns shown at most; a filter narrows a larger one.
const MATRIX_SIDE: usize = 40;

/// The response headers every page carries: no script, no outside resource, no framing, no caching.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The explain form as submitted, without its token.
#[derive(Debug, Default)]
pub struct ExplainForm {
    pub method: String,
    pub url: String,
    /// `download` or `upload`, for an LFS batch.
    pub lfs_operation: Option<String>,
}

/// Reads the filters from the page's query string (unknown keys ignored; an empty value is no filter).
pub fn filter(query: Option<&str>) -> Filter {
    let mut filter = Filter::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match &*key {
            "project" => filter.project = Some(value.trim_matches('/').to_owned()),
            "job" => filter.job = value.parse().ok(),
            "reason" => filter.reason = Some(value.to_owned()),
            _ => {}
        }
    }
    filter
}

/// Reads a submitted explain form: the token, and the rest.
pub fn explain_form(body: &[u8]) -> (String, ExplainForm) {
    let mut token = String::new();
    let mut form = ExplainForm { method: "GET".into(), ..ExplainForm::default() };
    for (key, value) in form_urlencoded::parse(body) {
        match &*key {
            "token" => token = value.trim().to_owned(),
            "method" => form.method = value.trim().to_owned(),
            "url" => form.url = value.trim().to_owned(),
            "lfs_operation" if !value.is_empty() => form.lfs_operation = Some(value.into_owned()),
            _ => {}
        }
    }
    (token, form)
}

/// The whole page.
pub fn page(
    view: &View,
    filter: &Filter,
    generation: u64,
    form: &ExplainForm,
    explained: Option<&Explained>,
) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>jobgate decisions</title>\n<style>",
        "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}",
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}",
        "th{background:#f3f3f3}#recent td:first-child{white-space:nowrap}.allow{color:#17622b}.deny{color:#a4161a}.muted{color:#777}pre{background:#f6f6f6;padding:.6em}",
        "form{margin:.4em 0}input[type=text],input[type=password]{width:22em}",
        "</style></head><body>\n<h1>jobgate — decisions</h1>\n"
    ));
    let _ = writeln!(
        out,
        "<p class=\"muted\">policy generation {generation} · {} of the last {} decisions kept ({} since start) · <a href=\"/-/decisions\">all</a></p>",
        view.recent.len(),
        view.kept,
        view.seen
    );
    filters(&mut out, filter);
    recent(&mut out, view);
    matrix(&mut out, view);
    explain(&mut out, form, explained);
    out.push_str("</body></html>\n");
    out
}

fn filters(out: &mut String, filter: &Filter) {
    let _ = write!(
        out,
        "<form id=\"filters\" method=\"get\" action=\"/-/decisions\">project or group <input type=\"text\" name=\"project\" value=\"{}\"> job <input type=\"text\" name=\"job\" size=\"8\" style=\"width:6em\" value=\"{}\"> reason <select name=\"reason\"><option value=\"\">any</option>",
        esc(filter.project.as_deref().unwrap_or_default()),
        filter.job.map_or(String::new(), |j| j.to_string())
    );
    for reason in Reason::ALL {
        let selected = if filter.reason.as_deref() == Some(reason.id()) { " selected" } else { "" };
        let _ = write!(out, "<option{selected}>{}</option>", reason.id());
    }
    out.push_str("</select> <button type=\"submit\">filter</button></form>\n");
}

fn recent(out: &mut String, view: &View) {
    out.push_str("<h2>Recent decisions</h2>\n<table id=\"recent\"><thead><tr><th>time</th><th>job</th><th>job project → target</th><th>request</th><th>family/action</th><th>decision</th><th>reason</th><th>status</th></tr></thead><tbody>\n");
    if view.recent.is_empty() {
        out.push_str("<tr><td colspan=\"8\" class=\"muted\">no decision matches</td></tr>\n");
    }
    for r in &view.recent {
        let decision = match (r.decision, r.enforced) {
            ("deny", false) => "would deny",
            (d, _) => d,
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{} {}</td><td>{}/{}</td><td class=\"{}\">{decision}</td><td>{}</td><td>{}</td></tr>",
            time(r.time),
            r.job_id.map_or(String::new(), |j| j.to_string()),
            esc(r.token_project.as_deref().unwrap_or("—")),
            esc(r.target.as_deref().unwrap_or("—")),
            esc(&r.method),
            esc(&r.path),
            r.family.unwrap_or("—"),
            r.action.unwrap_or("—"),
            if r.decision == "allow" { "allow" } else if r.decision == "deny" { "deny" } else { "muted" },
            r.reason,
            r.status
        );
    }
    out.push_str("</tbody></table>\n");
}

fn matrix(out: &mut String, view: &View) {
    out.push_str("<h2>Access matrix</h2>\n<p class=\"muted\">rows: the job's project; columns: the target. Each cell: requests (allowed / denied), last use, its job, scopes and refs seen.</p>\n");
    let mut sources: Vec<&str> = view.pairs.iter().map(|((s, _), _)| s.as_str()).collect();
    let mut targets: Vec<&str> = view.pairs.iter().map(|((_, t), _)| t.as_str()).collect();
    sources.dedup();
    targets.sort_unstable();
    targets.dedup();
    if sources.len() > MATRIX_SIDE || targets.len() > MATRIX_SIDE {
        let _ = writeln!(out, "<p>{} job projects × {} targets: showing the first {MATRIX_SIDE} of each; filter by project or group for the rest.</p>", sources.len(), targets.len());
    }
    if view.pairs_dropped > 0 {
        let _ = writeln!(
            out,
            "<p>{} request(s) of project pairs beyond the {} kept are not shown.</p>",
            view.pairs_dropped,
            crate::infra::audit::decisions::MAX_PAIRS
        );
    }
    sources.truncate(MATRIX_SIDE);
    targets.truncate(MATRIX_SIDE);
    out.push_str("<table id=\"matrix\"><thead><tr><th>job project \\ target</th>");
    for target in &targets {
        let _ = write!(out, "<th>{}</th>", esc(target));
    }
    out.push_str("</tr></thead><tbody>\n");
    for source in &sources {
        let _ = write!(out, "<tr><th>{}</th>", esc(source));
        for target in &targets {
            match view.pairs.binary_search_by(|((s, t), _)| (s.as_str(), t.as_str()).cmp(&(*source, *target))) {
                Ok(i) => {
                    let cell = &view.pairs[i].1;
                    let scopes: Vec<&str> = cell.scopes.iter().copied().collect();
                    let refs: Vec<String> = cell.refs.iter().map(|r| esc(r)).collect();
                    let _ = write!(
                        out,
                        "<td>{} (<span class=\"allow\">{}</span> / <span class=\"deny\">{}</span>)<br>last {}{}<br>{}<br><span class=\"muted\">{}</span></td>",
                        cell.requests,
                        cell.allowed,
                        cell.denied,
                        cell.last.map_or(String::new(), time),
                        cell.last_job.map_or(String::new(), |j| format!(", job {j}")),
                        scopes.join(" "),
                        refs.join(" ")
                    );
                }
                Err(_) => out.push_str("<td></td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn explain(out: &mut String, form: &ExplainForm, explained: Option<&Explained>) {
    out.push_str("<h2>Explain a request</h2>\n<form id=\"explain\" method=\"post\" action=\"/-/decisions/explain\">");
    out.push_str("token <input type=\"password\" name=\"token\" autocomplete=\"off\"> method <select name=\"method\">");
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
        let selected = if form.method == method { " selected" } else { "" };
        let _ = write!(out, "<option{selected}>{method}</option>");
    }
    let _ = write!(out, "</select> URL <input type=\"text\" name=\"url\" value=\"{}\"> LFS batch <select name=\"lfs_operation\"><option value=\"\">—</option>", esc(&without_credentials(&form.url)));
    for op in ["download", "upload"] {
        let selected = if form.lfs_operation.as_deref() == Some(op) { " selected" } else { "" };
        let _ = write!(out, "<option{selected}>{op}</option>");
    }
    out.push_str("</select> <button type=\"submit\">explain</button></form>\n");
    if let Some(explained) = explained {
        let class = match explained.summary {
            Some(s) if s.decision() == "allow" || s.decision() == "passthrough" => "allow",
            _ => "deny",
        };
        out.push_str("<pre id=\"explained\" class=\"");
        out.push_str(class);
        out.push_str("\">");
        for line in &explained.lines {
            out.push_str(&esc(line));
            out.push('\n');
        }
        out.push_str("</pre>\n");
    }
}

/// `url` with every query parameter GitLab reads a credential from left out: a token pasted in the
/// URL is used for the explanation, never written back.
fn without_credentials(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| crate::token::extract::credential_param(pair.split('=').next().unwrap_or_default()).is_none())
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Text as HTML: the five characters that could end an element or an attribute value escaped.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_any_shown_text_is_escaped() {
        assert_eq!(esc("<script>alert('x')</script>&\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;");
    }

    #[test]
    fn a_credential_in_the_pasted_url_is_not_written_back() {
        assert_eq!(
            without_credentials("/p/-/jobs/artifacts/main/download?job=build&job%5Ftoken=secret&private_token=x"),
            "/p/-/jobs/artifacts/main/download?job=build"
        );
        assert_eq!(without_credentials("/a.git/info/refs?token=abc"), "/a.git/info/refs");
        assert_eq!(
            without_credentials("/a.git/info/refs?service=git-upload-pack"),
            "/a.git/info/refs?service=git-upload-pack"
        );
    }

    #[test]
    fn filters_read_from_the_query_and_empty_ones_are_none() {
        let f = filter(Some("project=acme%2Fapp&job=12&reason="));
        assert_eq!((f.project.as_deref(), f.job, f.reason), (Some("acme/app"), Some(12), None));
    }
}
