//! `logcatch status` and `logcatch tap`: ask a running agent over HTTP; `status` prints
//! its tailers like `kubectl get`, `tap` the records it ships as they come. A plain
//! HTTP/1.1 GET on a TCP stream is all they need.

use std::io::{BufRead, BufReader, Read, Write};
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
    #[error("agent at {addr}: GET {path} answered {code}: {body}")]
    Refused {
        addr: String,
        path: String,
        code: u16,
        body: String,
    },
    #[error("agent at {addr} ended GET {path} (it is shutting down?)")]
    Ended { addr: String, path: String },
}

/// A connection to `addr` (`http://host:port` or `host:port`) with `GET path` sent.
fn send_get(addr: &str, path: &str) -> Result<TcpStream, StatusError> {
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
    Ok(stream)
}

/// `GET path` from `addr` (`http://host:port`): `(status code, body)`.
pub fn get(addr: &str, path: &str) -> Result<(u16, String), StatusError> {
    let unreachable = |source| StatusError::Unreachable {
        addr: addr.to_string(),
        source,
    };
    let mut stream = send_get(addr, path)?;
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

/// The path of `GET /tap` for a topic and a path glob.
pub fn tap_path(topic: Option<&str>, path: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(topic) = topic {
        query.append_pair("topic", topic);
    }
    if let Some(path) = path {
        query.append_pair("path", path);
    }
    let query = query.finish();
    if query.is_empty() {
        "/tap".to_string()
    } else {
        format!("/tap?{query}")
    }
}

/// `GET path` from `addr`, its body read as it comes: `line` gets each line (without its
/// newline) until it returns `false`. The body ending first is [`StatusError::Ended`];
/// an answer other than 200 is [`StatusError::Refused`] with its body.
pub fn get_lines(
    addr: &str,
    path: &str,
    mut line: impl FnMut(&str) -> bool,
) -> Result<(), StatusError> {
    let stream = send_get(addr, path)?;
    let unreachable = |source| StatusError::Unreachable {
        addr: addr.to_string(),
        source,
    };
    let protocol = || StatusError::Protocol {
        addr: addr.to_string(),
        path: path.to_string(),
    };
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    loop {
        let mut text = String::new();
        if reader.read_line(&mut text).map_err(unreachable)? == 0 {
            return Err(protocol());
        }
        if text == "\r\n" {
            break;
        }
        head.push(text.trim_end().to_ascii_lowercase());
    }
    let code: u16 = head
        .first()
        .and_then(|status| status.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(protocol)?;
    let chunked = head.iter().any(|h| h == "transfer-encoding: chunked");
    if code != 200 {
        let mut body = Vec::new();
        let _ = reader.read_to_end(&mut body);
        let body = String::from_utf8_lossy(&body);
        let body = if chunked {
            dechunk(&body).unwrap_or_default()
        } else {
            body.into_owned()
        };
        return Err(StatusError::Refused {
            addr: addr.to_string(),
            path: path.to_string(),
            code,
            body: body.trim().to_string(),
        });
    }
    // Records come when the agent ships them: no timeout from here on.
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(unreachable)?;
    let mut pending = Vec::new();
    let mut chunk = Vec::new();
    loop {
        chunk.clear();
        let more = if chunked {
            read_chunk(&mut reader, &mut chunk).map_err(unreachable)?
        } else {
            reader.read_until(b'\n', &mut chunk).map_err(unreachable)? > 0
        };
        if !more {
            return Err(StatusError::Ended {
                addr: addr.to_string(),
                path: path.to_string(),
            });
        }
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let text = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..=end);
            if !line(&text) {
                return Ok(());
            }
        }
    }
}

/// Appends the next chunk of a chunked body to `out`; `false` at the last (empty) one.
fn read_chunk(reader: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<bool> {
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid chunk");
    let mut size = String::new();
    if reader.read_line(&mut size)? == 0 {
        return Ok(false);
    }
    let size = size.trim();
    let size = size.split(';').next().unwrap_or(size);
    let size = usize::from_str_radix(size, 16).map_err(|_| invalid())?;
    if size == 0 {
        return Ok(false);
    }
    let start = out.len();
    out.resize(start + size + 2, 0);
    reader.read_exact(&mut out[start..])?;
    if &out[start + size..] != b"\r\n" {
        return Err(invalid());
    }
    out.truncate(start + size);
    Ok(true)
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
