//! Real etcd and Kafka-protocol (tansu) servers for tests, on free loopback ports.

use super::{free_port, wait_for};
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const INSTALL_HINT: &str = "install the test tools with `make deps` (see README)";

/// Runs `tests/tools/<script>` (a librdkafka client from PyPI's confluent-kafka) with
/// `args`; its standard output, or a failure naming the script and its stderr.
pub fn python_tool(script: &str, args: &[&str]) -> String {
    let path = format!("{}/tests/tools/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running python3 {path}: {e}; {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "tests/tools/{script} failed (is confluent-kafka installed? {INSTALL_HINT}): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

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
    /// Extra server flags (TLS files, request size limit).
    server_args: Vec<String>,
    /// Extra etcdctl flags (`--cacert`, `--user`).
    ctl_args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        Self::start_with("http", &[], &[])
    }

    /// With extra server flags, e.g. `--max-request-bytes`.
    pub fn start_with_args(args: &[&str]) -> Etcd {
        Self::start_with("http", args, &[])
    }

    /// Serving `https://` with the server certificate of `pki` (clients need its CA).
    pub fn start_tls(pki: &super::tls::TestPki) -> Etcd {
        let (cert, key, ca) = (
            pki.server_cert.display().to_string(),
            pki.server_key.display().to_string(),
            pki.ca.display().to_string(),
        );
        Self::start_with(
            "https",
            &["--cert-file", &cert, "--key-file", &key],
            &["--cacert", &ca],
        )
    }

    /// Serving `https://` and requiring a client certificate signed by `pki`'s CA (mutual
    /// TLS); etcdctl uses a client certificate of its own.
    pub fn start_mtls(pki: &super::tls::TestPki) -> Etcd {
        let (ctl_cert, ctl_key) = pki.client_cert("etcdctl", None);
        let path = |p: &std::path::Path| p.display().to_string();
        let (cert, key, ca) = (path(&pki.server_cert), path(&pki.server_key), path(&pki.ca));
        Self::start_with(
            "https",
            &[
                "--cert-file",
                &cert,
                "--key-file",
                &key,
                "--client-cert-auth",
                "--trusted-ca-file",
                &ca,
            ],
            &[
                "--cacert",
                &ca,
                "--cert",
                &path(&ctl_cert),
                "--key",
                &path(&ctl_key),
            ],
        )
    }

    fn start_with(scheme: &str, server_args: &[&str], ctl_args: &[&str]) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let owned = |args: &[&str]| args.iter().map(|a| a.to_string()).collect();
        let mut server = Etcd {
            child: None,
            endpoint: format!("{scheme}://127.0.0.1:{client}"),
            peer_url: format!("http://127.0.0.1:{peer}"),
            server_args: owned(server_args),
            ctl_args: owned(ctl_args),
            _dir: dir,
        };
        server.restart();
        server
    }

    /// Turns on user/password auth: `root` with `root_password` (etcdctl uses it from
    /// now on) and `user` with `password`, allowed to read keys under `prefix`.
    pub fn enable_auth(&mut self, root_password: &str, user: &str, password: &str, prefix: &str) {
        let steps: [&[&str]; 6] = [
            &["user", "add", &format!("root:{root_password}")],
            &["role", "add", "reader"],
            &[
                "role",
                "grant-permission",
                "reader",
                "--prefix=true",
                "read",
                prefix,
            ],
            &["user", "add", &format!("{user}:{password}")],
            &["user", "grant-role", user, "reader"],
            &["auth", "enable"],
        ];
        for step in steps {
            self.etcdctl(step)
                .unwrap_or_else(|e| panic!("etcdctl {step:?}: {e}"));
        }
        self.ctl_args
            .extend(["--user".to_string(), format!("root:{root_password}")]);
    }

    /// Changes `user`'s password (`etcdctl user passwd`, the password on stdin). etcd
    /// drops the user's tokens: every request made with one is refused from now on.
    pub fn change_password(&self, user: &str, password: &str) {
        use std::io::Write;
        let mut child = Command::new(tool("etcdctl", "ETCDCTL_BIN"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint])
            .args(&self.ctl_args)
            .args(["user", "passwd", user, "--interactive=false"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running etcdctl");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "etcdctl user passwd {user}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Kills the server (SIGKILL), keeping its data dir and ports.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): its connections stay open and answer nothing, so a
    /// client's keep-alive ends its watch; `thaw` lets it go on, without a restart.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        signal_child(self.child.as_ref(), signal, "etcd");
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
            .args(&self.server_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        self.child = Some(child);
        wait_for("etcd to answer", Duration::from_secs(20), || {
            self.etcdctl(&["endpoint", "health"]).ok()
        });
    }

    /// Writes `value` with the etcd-client crate (no command-line or 2 MiB etcdctl
    /// limits, for huge values); returns the revision of the write. Plain http only.
    pub fn put_bytes(&self, key: &str, value: &[u8]) -> i64 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client = etcd_client::Client::connect([self.endpoint.as_str()], None)
                .await
                .unwrap();
            let response = client.put(key, value, None).await.unwrap();
            response.header().unwrap().revision()
        })
    }

    /// Runs `etcdctl` against this server; `Err(stderr)` on failure.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        ctl(&self.endpoint, &self.ctl_args, args)
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
    /// The port metadata advertises: `port`, or a proxy's in front of the broker.
    advertised_port: u16,
    /// `--authentication`: SASL (SCRAM-SHA-256 against users in storage) required.
    pub authentication: bool,
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

    /// In-memory storage, advertising `proxy_port` in metadata so that clients come back
    /// through a proxy listening there (e.g. a TLS-terminating one).
    pub fn start_memory_behind(proxy_port: u16) -> Broker {
        Self::start_advertising("memory://tansu/", Some(proxy_port))
    }

    fn start(storage: &str) -> Broker {
        Self::start_advertising(storage, None)
    }

    fn start_advertising(storage: &str, advertised_port: Option<u16>) -> Broker {
        let port = free_port();
        let mut broker = Broker {
            child: None,
            port,
            advertised_port: advertised_port.unwrap_or(port),
            authentication: false,
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
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised_port);
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
                &advertised,
            ])
            .args(["--storage-engine", &self.storage])
            .args(self.authentication.then_some("--authentication"))
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

    /// Freezes the broker (SIGSTOP): its connections stay open and answer nothing, as a
    /// hung broker's do; `thaw` lets it go on with everything it was sent.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        signal_child(self.child.as_ref(), signal, "the broker");
    }

    /// The broker's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a SCRAM-SHA-256 user and `topics` through librdkafka's admin client
    /// (tests/tools/scram_user.py); the broker must not require authentication yet.
    pub fn create_scram_user(&self, user: &str, password: &str, topics: &[&str]) {
        let address = self.address();
        let mut args = vec![address.as_str(), user, password];
        args.extend(topics);
        python_tool("scram_user.py", &args);
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

/// Sends `signal` to a server the harness started (`what` names it in a failure).
fn signal_child(child: Option<&Child>, signal: nix::sys::signal::Signal, what: &str) {
    let child = child.unwrap_or_else(|| panic!("{what} is not running"));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("signal {what}: {e}"));
}

/// One member of an [`EtcdCluster`].
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    child: Option<Child>,
    frozen: bool,
}

impl Member {
    fn data_dir(&self, root: &std::path::Path) -> PathBuf {
        root.join(&self.name)
    }

    fn live(&self) -> bool {
        self.child.is_some() && !self.frozen
    }
}

/// A throwaway etcd cluster of real members on free loopback ports, each with its own data
/// dir, as the seed deploys it (`--initial-cluster`); a member can be killed, frozen,
/// restarted, or replaced by an empty one; every member is stopped on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    token: String,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `size` members and waits until each answers.
    pub fn start(size: usize) -> EtcdCluster {
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                child: None,
                frozen: false,
            })
            .collect();
        let mut cluster = EtcdCluster {
            token: format!("logcatch-{}", members[0].client_url),
            members,
            dir: tempfile::tempdir().unwrap(),
        };
        // The members wait for each other: start them all, then wait.
        for i in 0..size {
            cluster.launch(i, "new");
        }
        for i in 0..size {
            cluster.wait_healthy(i);
        }
        cluster
    }

    /// Every member's client URL, as the agent is configured with them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Kills member `i` (SIGKILL), keeping its data dir and ports.
    pub fn kill(&mut self, i: usize) {
        let member = &mut self.members[i];
        if let Some(mut child) = member.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        member.frozen = false;
    }

    /// Starts the (killed) member `i` again on its data dir and ports.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.launch(i, "existing");
        self.wait_healthy(i);
    }

    /// Freezes member `i` (SIGSTOP): its connections stay open and answer nothing.
    pub fn freeze(&mut self, i: usize) {
        signal_child(self.members[i].child.as_ref(), Signal::SIGSTOP, "etcd");
        self.members[i].frozen = true;
    }

    pub fn thaw(&mut self, i: usize) {
        signal_child(self.members[i].child.as_ref(), Signal::SIGCONT, "etcd");
        self.members[i].frozen = false;
        self.wait_healthy(i);
    }

    /// Replaces member `i` by an empty one, as after a lost disk: killed, its data dir
    /// wiped, removed from the cluster and added again (`etcdctl member remove/add`), then
    /// started with `--initial-cluster-state existing` to fetch everything from the others.
    pub fn replace_empty(&mut self, i: usize) {
        self.kill(i);
        let data = self.members[i].data_dir(self.dir.path());
        std::fs::remove_dir_all(&data).unwrap();
        let (name, peer_url) = (&self.members[i].name, &self.members[i].peer_url);
        // Each step is retried until the live members have a leader (a killed leader is
        // replaced by an election first); a step that did apply is not done twice.
        wait_for(&format!("{name} removed"), Duration::from_secs(30), || {
            let Some(member) = self.member(|m| m["peerURLs"][0] == peer_url.as_str())? else {
                return Some(());
            };
            let id = member["ID"].as_u64().expect("member ID");
            let _ = self.etcdctl(&["member", "remove", &format!("{id:x}")]);
            None
        });
        let peer_urls = format!("--peer-urls={peer_url}");
        wait_for(&format!("{name} added"), Duration::from_secs(30), || {
            if self
                .member(|m| m["peerURLs"][0] == peer_url.as_str())?
                .is_some()
            {
                return Some(());
            }
            let _ = self.etcdctl(&["member", "add", name, &peer_urls]);
            None
        });
        self.launch(i, "existing");
        self.wait_healthy(i);
    }

    /// The first member of `etcdctl member list` that matches, `Ok(None)` if none; `None`
    /// when the list fails.
    fn member(
        &self,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<Option<serde_json::Value>> {
        let list = self.etcdctl(&["member", "list", "-w", "json"]).ok()?;
        let list: serde_json::Value = serde_json::from_str(&list).ok()?;
        let members = list["members"].as_array()?;
        Some(members.iter().find(|m| matches(m)).cloned())
    }

    fn launch(&mut self, i: usize, state: &str) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let member = &self.members[i];
        let data = member.data_dir(self.dir.path());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", member.name)))
            .unwrap();
        let child = Command::new(tool("etcd", "ETCD_BIN"))
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &member.client_url])
            .args(["--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url])
            .args(["--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        self.members[i].child = Some(child);
    }

    fn wait_healthy(&self, i: usize) {
        let endpoint = &self.members[i].client_url;
        wait_for(
            &format!("etcd member {} to answer", self.members[i].name),
            Duration::from_secs(30),
            || ctl(endpoint, &[], &["endpoint", "health"]).ok(),
        );
    }

    /// The member log of `i` so far (for failure messages).
    pub fn log(&self, i: usize) -> String {
        let name = &self.members[i].name;
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Runs `etcdctl` against the live members (not killed, not frozen); `Err(stderr)` on
    /// failure.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let live: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.live())
            .map(|m| m.client_url.as_str())
            .collect();
        // Bounded: a member without a leader would keep a write waiting.
        let timeout = ["--command-timeout".to_string(), "5s".to_string()];
        ctl(&live.join(","), &timeout, args)
    }
}

/// `etcdctl --endpoints <endpoints> <options> <args>`; `Err(stderr)` on failure.
fn ctl(endpoints: &str, options: &[String], args: &[&str]) -> Result<String, String> {
    let output = Command::new(tool("etcdctl", "ETCDCTL_BIN"))
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints])
        .args(options)
        .args(args)
        .output()
        .expect("running etcdctl");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
