//! Real etcd and Kafka-protocol (tansu) servers for tests, on free loopback ports.

use super::{free_port, wait_for};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const INSTALL_HINT: &str = "install the test tools with `make deps` (see README)";

/// Finds a tool: `$ENV_VAR`, then PATH. Panics with the install hint when missing.
pub fn tool(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env_var}={} does not exist; {INSTALL_HINT}",
            path.display()
        );
        return path;
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        panic!("`{name}` not found (set {env_var} or put it on PATH); {INSTALL_HINT}")
    })
}

/// A throwaway etcd server; `stop` and `restart` keep its ports and data.
pub struct Etcd {
    child: Option<Child>,
    pub endpoint: String,
    peer_url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let mut server = Etcd {
            child: None,
            endpoint: format!("http://127.0.0.1:{client}"),
            peer_url: format!("http://127.0.0.1:{peer}"),
            _dir: dir,
        };
        server.restart();
        server
    }

    /// Kills the server (SIGKILL), keeping its data dir and ports.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the (stopped) server again on the same ports and data dir.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Makes changes the agent cannot see: the server is stopped, started on another
    /// client port for `change` (its `etcdctl` talks there), stopped again, and left
    /// stopped — for the agent, etcd was down while the declarations changed.
    pub fn change_while_unreachable(&mut self, change: impl FnOnce(&Etcd)) {
        self.stop();
        let public = std::mem::replace(
            &mut self.endpoint,
            format!("http://127.0.0.1:{}", free_port()),
        );
        self.launch();
        change(self);
        self.stop();
        self.endpoint = public;
    }

    fn launch(&mut self) {
        let etcd = tool("etcd", "ETCD_BIN");
        let dir = self._dir.path();
        let (endpoint, peer_url) = (&self.endpoint, &self.peer_url);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("etcd.log"))
            .unwrap();
        let child = Command::new(etcd)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                endpoint,
                "--advertise-client-urls",
                endpoint,
            ])
            .args([
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
            ])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        self.child = Some(child);
        wait_for("etcd to answer", Duration::from_secs(20), || {
            self.etcdctl(&["endpoint", "health"]).ok()
        });
    }

    /// Runs `etcdctl` against this server; `Err(stderr)` on failure.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(tool("etcdctl", "ETCDCTL_BIN"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint])
            .args(args)
            .output()
            .expect("running etcdctl");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A throwaway tansu broker (in-memory storage, or sqlite to survive restarts).
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    storage: String,
    dir: tempfile::TempDir,
}

impl Broker {
    pub fn start_memory() -> Broker {
        Self::start("memory://tansu/")
    }

    /// Durable storage in the broker's scratch dir (tansu takes it relative to its cwd).
    pub fn start_sqlite() -> Broker {
        Self::start("sqlite://tansu.db")
    }

    fn start(storage: &str) -> Broker {
        let mut broker = Broker {
            child: None,
            port: free_port(),
            storage: storage.to_string(),
            dir: tempfile::tempdir().unwrap(),
        };
        broker.restart();
        broker
    }

    /// Stops the broker (SIGKILL); `restart` brings it back on the same port and storage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let tansu = tool("tansu", "TANSU_BIN");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .unwrap();
        // tansu reads a `.env` in its working directory: run it in an empty one.
        let child = Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting tansu");
        self.child = Some(child);
        let port = self.port;
        wait_for("tansu to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    /// The broker's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic with the tansu CLI.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<(), String> {
        let output = Command::new(tool("tansu", "TANSU_BIN"))
            .args([
                "topic",
                "create",
                name,
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
            ])
            .args(["--partitions", &partitions.to_string()])
            .current_dir(self.dir.path())
            .output()
            .expect("running tansu topic create");
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
