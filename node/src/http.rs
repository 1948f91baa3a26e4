//! `/livez`, `/readyz` and `/metrics` over plain HTTP/1.1 on one listener.
//! The server answers one request per connection; probes and scrapers need
//! nothing more, and it keeps the agent free of a web framework.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What the probes report. `ready` needs every component to say so.
#[derive(Debug, Default)]
pub struct Health {
    not_ready: Mutex<std::collections::BTreeMap<&'static str, String>>,
}

impl Health {
    /// A fresh health state where `components` are not ready yet.
    pub fn new(components: &[&'static str]) -> Health {
        let h = Health::default();
        for c in components {
            h.set_not_ready(c, "starting");
        }
        h
    }

    pub fn set_ready(&self, component: &'static str) {
        self.not_ready.lock().unwrap().remove(component);
    }

    pub fn set_not_ready(&self, component: &'static str, why: impl Into<String>) {
        self.not_ready.lock().unwrap().insert(component, why.into());
    }

    /// `Ok` when ready, else the components that are not with their reasons.
    pub fn readiness(&self) -> Result<(), String> {
        let nr = self.not_ready.lock().unwrap();
        if nr.is_empty() {
            Ok(())
        } else {
            Err(nr
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; "))
        }
    }
}

/// Serve until the task is dropped.
pub async fn serve(listener: TcpListener, health: Arc<Health>, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let health = health.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut n = 0;
            // Read until the end of the request head (or the buffer is full).
            while n < buf.len() {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = respond(path, &health, &metrics);
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

fn respond(path: &str, health: &Health, metrics: &Metrics) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/livez" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" => match health.readiness() {
            Ok(()) => ("200 OK", TEXT, "ready\n".into()),
            Err(why) => (
                "503 Service Unavailable",
                TEXT,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        _ => (
            "404 Not Found",
            TEXT,
            "try /livez, /readyz or /metrics\n".into(),
        ),
    }
}

/// Bind the health/metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_lists_what_is_not_ready() {
        let h = Health::new(&["bgp", "dataplane"]);
        let m = Metrics::new();
        let (s, _, body) = respond("/readyz", &h, &m);
        assert_eq!(s, "503 Service Unavailable");
        assert!(body.contains("bgp: starting") && body.contains("dataplane: starting"));
        h.set_ready("bgp");
        h.set_ready("dataplane");
        assert_eq!(respond("/readyz", &h, &m).0, "200 OK");
        assert_eq!(respond("/nope", &h, &m).0, "404 Not Found");
    }
}
