//! Benchmark helper: waits until a running agent's `/status` shows a file acknowledged up
//! to OFFSET, and prints when it saw that (seconds since the Unix epoch, like `date
//! +%s.%N`). It asks every 5 ms from this one process over plain HTTP; the shell loop it
//! replaces forked `curl` and `grep` as often and took ≈ 0.3 s of CPU a second from the
//! two cores the agent and the broker share (measured with `perf sched`), so the agent's
//! runs were timed on a busier machine than the baselines beside them.
//!
//! Fails (exit status 1) when the process PID is gone before that, or after 10 minutes.
//!
//! usage: await_acked HTTP_PORT OFFSET PID

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: await_acked HTTP_PORT OFFSET PID";
const POLL: Duration = Duration::from_millis(5);
const GIVE_UP: Duration = Duration::from_secs(600);

fn main() {
    if let Err(e) = run() {
        eprintln!("await_acked: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, offset, pid] = args.as_slice() else {
        return Err(USAGE.into());
    };
    let port: u16 = port
        .parse()
        .map_err(|e| format!("HTTP_PORT {port:?}: {e}"))?;
    let offset: u64 = offset
        .parse()
        .map_err(|e| format!("OFFSET {offset:?}: {e}"))?;
    let alive = Path::new("/proc").join(pid);
    // `/status` lists each file's acknowledged offset as `"offset":N,`.
    let done = format!("\"offset\":{offset},");
    let started = Instant::now();
    let mut reply = Vec::new();
    loop {
        if status(port, &mut reply).is_ok() && contains(&reply, done.as_bytes()) {
            let seen = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| e.to_string())?;
            println!("{}.{:09}", seen.as_secs(), seen.subsec_nanos());
            return Ok(());
        }
        if !alive.exists() {
            return Err(format!("process {pid} ended before offset {offset}"));
        }
        if started.elapsed() > GIVE_UP {
            return Err(format!("no offset {offset} within {GIVE_UP:?}"));
        }
        std::thread::sleep(POLL);
    }
}

/// One `GET /status` (the agent closes the connection after an HTTP/1.0 answer).
fn status(port: u16, reply: &mut Vec<u8>) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    reply.clear();
    stream.read_to_end(reply)?;
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}
