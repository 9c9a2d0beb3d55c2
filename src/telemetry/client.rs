//! `logcatch status`: asks a running agent over HTTP and prints its tailers like
//! `kubectl get`. A plain HTTP/1.1 GET on a TCP stream is all it needs.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("--addr {0:?}: expected http://HOST:PORT")]
    Addr(String),
    #[error("agent at {addr} is unreachable: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("agent at {addr}: unexpected answer to GET {path}")]
    Protocol { addr: String, path: String },
    #[error("agent at {addr} is not ready: {reason}")]
    NotReady { addr: String, reason: String },
}

/// `GET path` from `addr` (`http://host:port`): `(status code, body)`.
pub fn get(addr: &str, path: &str) -> Result<(u16, String), StatusError> {
    let host = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    let target = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| StatusError::Addr(addr.to_string()))?;
    let unreachable = |source| StatusError::Unreachable {
        addr: addr.to_string(),
        source,
    };
    let mut stream =
        TcpStream::connect_timeout(&target, Duration::from_secs(5)).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(unreachable)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(unreachable)?;
    let response = String::from_utf8_lossy(&response);
    let protocol = || StatusError::Protocol {
        addr: addr.to_string(),
        path: path.to_string(),
    };
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(protocol)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(protocol)?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body).ok_or_else(protocol)?
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut rest: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

/// The tailers of a `/status` body as an aligned table.
pub fn table(status: &serde_json::Value) -> String {
    let header = [
        "TOPIC", "PATH", "STATE", "RESTARTS", "OFFSET", "LAG", "OWNERS", "REASON",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for t in status["tailers"].as_array().into_iter().flatten() {
        let text = |key: &str| t[key].as_str().unwrap_or("").to_string();
        let number = |key: &str| t[key].as_u64().unwrap_or(0).to_string();
        let owners: Vec<&str> = t["owners"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.as_str())
            .collect();
        rows.push(vec![
            text("topic"),
            text("path"),
            text("state"),
            number("restarts"),
            number("offset"),
            number("lag_bytes"),
            owners.join(","),
            text("reason"),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_should_align_columns_like_kubectl() {
        let status = serde_json::json!({"tailers": [
            {"topic": "app", "path": "/var/log/a.log", "state": "running", "restarts": 0, "offset": 10, "lag_bytes": 0, "owners": ["config"], "reason": null},
            {"topic": "payments", "path": "/b", "state": "backoff", "restarts": 3, "offset": 0, "lag_bytes": 7, "owners": ["config", "etcd:/k"], "reason": "denied"},
        ]});
        let text = table(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "TOPIC      PATH             STATE     RESTARTS   OFFSET   LAG   OWNERS           REASON");
        assert_eq!(
            lines[1],
            "app        /var/log/a.log   running   0          10       0     config"
        );
        assert_eq!(lines[2], "payments   /b               backoff   3          0        7     config,etcd:/k   denied");
    }
}
