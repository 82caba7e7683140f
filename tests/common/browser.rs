//! A real headless Chromium (Debian `chromium`) driven over the DevTools protocol: navigate, fill
//! and submit forms, read the DOM, take screenshots. The browser runs in a process group of its own
//! ([`super::Process`]) and is killed with it.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::Process;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    socket: Socket,
    next_id: u64,
    events: Vec<Value>,
    _profile: tempfile::TempDir,
    _process: Process,
}

impl Browser {
    /// Starts `chromium --headless` on a blank page and attaches to that page.
    pub async fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut process = Process::spawn(
            Command::new("chromium")
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--window-size=1280,900",
                    "--remote-debugging-port=0",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let stderr = process.child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let port: u16 = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("chromium did not report its DevTools port (is Debian's chromium installed?)");
            if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
        };
        let targets: Value = serde_json::from_str(&http_get(port, "/json/list")).unwrap();
        let page = targets.as_array().unwrap().iter().find(|t| t["type"] == "page").expect("a page target");
        let (socket, _) =
            tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap()).await.unwrap();
        let mut browser = Browser { socket, next_id: 1, events: Vec::new(), _profile: profile, _process: process };
        browser.call("Page.enable", json!({})).await;
        browser.call("Network.enable", json!({})).await;
        browser
    }

    /// One DevTools command; returns its `result` (events arriving meanwhile are kept).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.socket
            .send(Message::text(json!({"id": id, "method": method, "params": params}).to_string()))
            .await
            .unwrap();
        loop {
            let message: Value = self.receive().await;
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
            self.events.push(message);
        }
    }

    async fn receive(&mut self) -> Value {
        let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
            .await
            .expect("DevTools answer within 30 s")
            .unwrap()
            .unwrap();
        serde_json::from_str(message.to_text().unwrap()).unwrap()
    }

    /// Sends every request of the page with these headers (empty: none).
    pub async fn headers(&mut self, headers: Value) {
        self.call("Network.setExtraHTTPHeaders", json!({ "headers": headers })).await;
    }

    /// Opens `url` and waits until it has loaded; returns the document's HTTP status.
    pub async fn open(&mut self, url: &str) -> u64 {
        self.events.clear();
        self.call("Page.navigate", json!({ "url": url })).await;
        self.loaded().await
    }

    /// Runs `script` (which submits a form or follows a link) and waits for the next page to load.
    pub async fn submit(&mut self, script: &str) -> u64 {
        self.events.clear();
        self.eval(script).await;
        self.loaded().await
    }

    /// Waits for the page's load event; returns the status of the last document response before it.
    async fn loaded(&mut self) -> u64 {
        let mut status = 0;
        let mut seen = std::mem::take(&mut self.events).into_iter();
        loop {
            let message = match seen.next() {
                Some(message) => message,
                None => self.receive().await,
            };
            if message["method"] == "Network.responseReceived" && message["params"]["type"] == "Document" {
                status = message["params"]["response"]["status"].as_u64().unwrap_or_default();
            }
            if message["method"] == "Page.loadEventFired" {
                self.events.extend(seen);
                return status;
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true })).await;
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// The page's visible text.
    pub async fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''").await.as_str().unwrap_or_default().to_owned()
    }

    /// A PNG of the page as it is shown.
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true })).await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// A GET on the DevTools HTTP endpoint: its body, read by `Content-Length` (the server keeps the
/// connection open).
fn http_get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}
