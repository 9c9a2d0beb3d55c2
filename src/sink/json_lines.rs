//! stdout and file sinks: one JSON object per line,
//! `{"topic", "path", "offset", "line", "node"}`, invalid UTF-8 shown lossily; container
//! logs add `stream`, `time`, `namespace`, `pod`, `container`, `container_id`, and a
//! line that could not be parsed `parse_error`.
//!
//! A dedicated thread owns the writer, so blocking writes never stall the runtime; the
//! bounded channel to it is the backpressure. A batch is acknowledged after it was
//! written and flushed to the OS (it survives the agent's crash).

use super::{Ack, Batch, Shipped, Sink, SinkError};
use futures::future::{BoxFuture, FutureExt};
use serde::Serialize;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Batches queued to the writer thread before `submit` waits.
const QUEUE: usize = 16;

type Job = (Batch, oneshot::Sender<Result<(), SinkError>>);

pub struct JsonLinesSink {
    name: &'static str,
    node: Arc<str>,
    jobs: mpsc::Sender<Job>,
}

#[derive(Serialize)]
struct Record<'a> {
    topic: &'a str,
    path: &'a Path,
    offset: u64,
    line: &'a str,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parse_error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<&'a str>,
}

impl JsonLinesSink {
    pub fn stdout(node: Arc<str>) -> Self {
        Self::spawn("stdout", node, Box::new(std::io::stdout()))
    }

    /// Appends to `path`, creating it and its directory. A record torn by a crash (the
    /// agent killed mid-write) is cut off first: its batch was not acknowledged, so it is
    /// written again whole, and every line of the file stays one whole record.
    pub fn file(path: &Path, node: Arc<str>) -> Result<Self, SinkError> {
        let io = |e: std::io::Error| SinkError::Open {
            path: path.to_path_buf(),
            source: Arc::new(e),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if let Some(whole) = cut_torn_record(&file).map_err(io)? {
            tracing::warn!(path = %path.display(), kept = whole,
                "cut a record torn by a crash off the end of the sink file; it is written again");
        }
        Ok(Self::spawn("file", node, Box::new(file)))
    }

    fn spawn(name: &'static str, node: Arc<str>, out: Box<dyn Write + Send>) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let writer_node = node.clone();
        std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || write_loop(name, &writer_node, out, rx))
            .expect("spawning the sink writer thread");
        JsonLinesSink { name, node, jobs }
    }
}

/// Truncates `file` after its last newline when something follows it; returns the length
/// kept then.
fn cut_torn_record(file: &std::fs::File) -> std::io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let piece = &mut chunk[..(end - start) as usize];
        file.read_exact_at(piece, start)?;
        if let Some(i) = memchr::memrchr(b'\n', piece) {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end == len {
        return Ok(None);
    }
    file.set_len(end)?;
    file.sync_all()?;
    Ok(Some(end))
}

fn write_loop(
    name: &'static str,
    node: &str,
    out: Box<dyn Write + Send>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    let mut done = Vec::new();
    while let Some(job) = rx.blocking_recv() {
        done.push(job);
        // Take whatever else is queued, so one flush covers many batches.
        while done.len() < QUEUE {
            match rx.try_recv() {
                Ok(job) => done.push(job),
                Err(_) => break,
            }
        }
        let result = done
            .iter()
            .try_for_each(|(batch, _)| write_batch(&mut out, batch, node))
            .and_then(|()| out.flush())
            .map_err(|e| SinkError::Io {
                sink: name,
                source: Arc::new(e),
            });
        for (_, ack) in done.drain(..) {
            let _ = ack.send(result.clone());
        }
    }
}

fn write_batch(out: &mut impl Write, batch: &Batch, node: &str) -> std::io::Result<()> {
    each_record(batch, node, |_, record| {
        serde_json::to_writer(&mut *out, record)?;
        out.write_all(b"\n")
    })
}

/// Calls `write` with each record of `batch` as the sink writes it, and its offset.
fn each_record<E>(
    batch: &Batch,
    node: &str,
    mut write: impl FnMut(u64, &Record<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let pod = batch.pod.as_deref();
    for (offset, line, meta) in batch.records() {
        let line = String::from_utf8_lossy(line);
        let record = Record {
            topic: &batch.topic,
            path: &batch.path,
            offset,
            line: &line,
            node,
            stream: meta.stream.as_str(),
            time: meta.time.map(crate::format::format_time),
            parse_error: meta.error.map(|e| e.reason()),
            namespace: pod.map(|p| p.namespace.as_str()),
            pod: pod.map(|p| p.pod.as_str()),
            container: pod.map(|p| p.container.as_str()),
            container_id: pod.and_then(|p| p.container_id.as_deref()),
        };
        write(offset, &record)?;
    }
    Ok(())
}

impl Sink for JsonLinesSink {
    fn submit(&self, batch: Batch) -> BoxFuture<'_, Result<Ack, SinkError>> {
        async move {
            let (tx, rx) = oneshot::channel();
            let closed = SinkError::Closed { sink: self.name };
            self.jobs
                .send((batch, tx))
                .await
                .map_err(|_| closed.clone())?;
            let ack: Ack = async move { rx.await.unwrap_or(Err(closed)) }.boxed();
            Ok(ack)
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        // Every acknowledged batch is already flushed; nothing is buffered past an ack.
        futures::future::ready(Ok(())).boxed()
    }

    /// Each record's JSON line (without its newline) as the value.
    fn shipped(&self, batch: &Batch) -> Result<Vec<Shipped>, SinkError> {
        let mut shipped = Vec::with_capacity(batch.len());
        each_record(batch, &self.node, |offset, record| {
            shipped.push(Shipped {
                topic: batch.topic.clone(),
                key: None,
                headers: Vec::new(),
                value: serde_json::to_vec(record)?,
                path: batch.path.clone(),
                offset,
            });
            Ok::<(), serde_json::Error>(())
        })
        .map_err(|e| SinkError::Io {
            sink: self.name,
            source: Arc::new(e.into()),
        })?;
        Ok(shipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_sink_should_write_one_json_object_per_line_and_ack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/records.jsonl");
        let sink = JsonLinesSink::file(&path, "node-1".into()).unwrap();
        let mut batch = Batch::new("app".into(), Path::new("/var/log/a.log").into());
        batch.push(0, b"hello");
        batch.push(6, b"\xffbad \"utf8\"");
        sink.submit(batch).await.unwrap().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            records[0],
            serde_json::json!({"topic": "app", "path": "/var/log/a.log", "offset": 0, "line": "hello", "node": "node-1"})
        );
        assert_eq!(records[1]["line"], "\u{fffd}bad \"utf8\"");
        assert_eq!(records[1]["offset"], 6);
        // What `logcatch tap` shows is what was written.
        let mut batch = Batch::new("app".into(), Path::new("/var/log/a.log").into());
        batch.push(0, b"hello");
        batch.push(6, b"\xffbad \"utf8\"");
        let shipped = sink.shipped(&batch).unwrap();
        let values: Vec<String> = shipped
            .iter()
            .map(|s| String::from_utf8(s.value.clone()).unwrap())
            .collect();
        assert_eq!(values, text.lines().collect::<Vec<_>>());
        assert_eq!(shipped.iter().map(|s| s.offset).collect::<Vec<_>>(), [0, 6]);
    }

    #[test]
    fn a_torn_last_record_should_be_cut_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let whole = "{\"a\":1}\n".repeat(10_000);
        for (text, kept) in [
            (format!("{whole}{{\"torn"), whole.as_str()),
            (whole.clone(), whole.as_str()),
            ("{\"torn".to_string(), ""),
            (String::new(), ""),
        ] {
            std::fs::write(&path, &text).unwrap();
            drop(JsonLinesSink::file(&path, "n".into()).unwrap());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
        }
    }
}
