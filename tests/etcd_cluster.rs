//! The agent against a three-member etcd cluster, as the seed deploys it, configured with
//! all three endpoints: a member killed, hung (SIGSTOP) or replaced by an empty one, each
//! member in turn. After each fault a change put through a live member reaches the agent
//! within seconds, and the tailers of unchanged entries never stop.

mod common;

use common::servers::EtcdCluster;
use common::{append_lines, Agent, Workspace};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a change put through a live member may take to reach the agent. A killed
/// member closes its connections, which ends their watches at once. A hung one answers
/// nothing: the HTTP/2 keep-alive (a ping after 10 s without a frame, 5 s to answer) ends
/// its watches within 15 s, and the watcher re-lists through a live member.
const CHANGE_WITHIN: Duration = Duration::from_secs(25);
const LONG: Duration = Duration::from_secs(30);

/// The entries no fault changes: their tailers must never stop.
const STEADY: [(&str, &str); 2] = [("/lc/node", "node.log"), ("/lc/apps/web", "web.log")];

struct Fixture {
    cluster: EtcdCluster,
    ws: Workspace,
    agent: Agent,
    /// The entries `/lc/node` declares besides its steady one.
    node_extra: Vec<PathBuf>,
    markers: usize,
}

fn logs(ws: &Workspace) -> PathBuf {
    ws.dir.path().canonicalize().unwrap().join("logs")
}

fn value(paths: &[&Path]) -> String {
    let entries: Vec<Value> = paths
        .iter()
        .map(|path| serde_json::json!({"path": path, "topic": "app"}))
        .collect();
    Value::Array(entries).to_string()
}

impl Fixture {
    /// A three-member cluster, the agent configured with every member's endpoint.
    fn start() -> Fixture {
        Self::start_on(&[0, 1, 2])
    }

    /// A three-member cluster, the agent configured with the endpoints of `members`.
    fn start_on(members: &[usize]) -> Fixture {
        let cluster = EtcdCluster::start(3);
        let ws = Workspace::new();
        let logs = logs(&ws);
        std::fs::create_dir_all(&logs).unwrap();
        for (key, file) in STEADY {
            let path = logs.join(file);
            cluster.etcdctl(&["put", key, &value(&[&path])]).unwrap();
        }
        let all = cluster.endpoints();
        let endpoints: Vec<String> = members.iter().map(|&i| format!("\"{}\"", all[i])).collect();
        ws.write_config(&format!(
            "{}etcd:\n  endpoints: [{}]\n  keys: [\"/lc/node\"]\n  prefixes: [\"/lc/apps/\"]\n  allowed_paths: [\"{}/**\"]\n  dial_timeout: 1s\n  request_timeout: 2s\n",
            ws.config("  []"),
            endpoints.join(", "),
            logs.display(),
        ));
        // "tailer started" (debug) counts every start of a tailer.
        let agent = Agent::start_with_env(
            &[("RUST_LOG", "info,rskafka=warn,logcatch::reconcile=debug")],
            &ws.config_path(),
            ws.dir.path(),
            ws.http_port,
        );
        let mut fixture = Fixture {
            cluster,
            ws,
            agent,
            node_extra: Vec::new(),
            markers: 0,
        };
        fixture.steady_tailers_ship();
        fixture.one_connection_per_member_at_most();
        fixture
    }

    /// The agent's established connections to each member.
    fn connections(&self) -> Vec<usize> {
        self.cluster
            .endpoints()
            .iter()
            .map(|e| {
                let port = e.rsplit(':').next().unwrap().parse().unwrap();
                common::established_connections(self.agent.pid(), port)
            })
            .collect()
    }

    /// The agent's one client holds a connection per member it talks to, whatever the
    /// number of keys and prefixes (two watches here).
    fn one_connection_per_member_at_most(&self) {
        let connections = self.connections();
        eprintln!("connections of the agent to each member: {connections:?}");
        assert!(connections.iter().all(|&n| n <= 1), "{connections:?}");
        assert!(connections.iter().sum::<usize>() >= 1, "{connections:?}");
    }

    /// Every watch and the status writer left the `failed` member: a client that spreads
    /// its requests over every member connects again to a hung one (which accepts
    /// connections and answers nothing), so that a re-list may land on it again and again.
    fn left_member(&self, failed: usize) {
        let connections = self.wait(&format!("the agent to leave member {failed}"), LONG, || {
            let connections = self.connections();
            (connections[failed] == 0).then_some(connections)
        });
        eprintln!("connections of the agent to each member: {connections:?}");
    }

    /// The agent did not go back to the `failed` member.
    fn stays_off_member(&self, failed: usize) {
        let connections = self.connections();
        assert_eq!(connections[failed], 0, "{connections:?}");
    }

    fn steady_paths(&self) -> Vec<PathBuf> {
        STEADY.iter().map(|(_, f)| logs(&self.ws).join(f)).collect()
    }

    /// Polls `check` for at most `within`; on timeout fails with the agent's `/status`,
    /// its log and the cluster members' logs.
    fn wait<T>(&self, what: &str, within: Duration, check: impl Fn() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() >= deadline {
                let members: Vec<String> = (0..self.cluster.size())
                    .map(|i| format!("member {i}:\n{}", self.cluster.log(i)))
                    .collect();
                panic!(
                    "timed out after {within:?} waiting for {what}\n/status: {}\nagent log:\n{}\n{}",
                    self.agent.status()["sources"],
                    self.agent.log(),
                    members.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn shipped(&self, path: &Path, marker: &str) -> bool {
        self.ws
            .records()
            .iter()
            .any(|r| r.line == marker && Path::new(&r.path) == path)
    }

    /// A new line in each steady file is shipped.
    fn steady_tailers_ship(&mut self) {
        for path in self.steady_paths() {
            self.markers += 1;
            let marker = format!("steady-{}", self.markers);
            append_lines(&path, [marker.clone()]);
            self.wait(&format!("{marker} shipped"), LONG, || {
                self.shipped(&path, &marker).then_some(())
            });
        }
    }

    /// Puts `value` through the live members, once they have a leader.
    fn put(&self, key: &str, value: &str) {
        self.wait(&format!("the put of {key} to succeed"), LONG, || {
            self.cluster.etcdctl(&["put", key, value]).ok()
        });
    }

    /// Puts a change of the key and one under the prefix through a live member and waits
    /// until both reach the agent (their new files shipped); returns how long it took.
    fn change_arrives(&mut self, step: &str) -> Duration {
        let logs = logs(&self.ws);
        let (under_prefix, under_key) = (
            logs.join(format!("{step}.log")),
            logs.join(format!("{step}-node.log")),
        );
        for path in [&under_prefix, &under_key] {
            append_lines(path, [format!("{step}-line")]);
        }
        self.node_extra.push(under_key.clone());
        let steady = self.steady_paths();
        let mut node: Vec<&Path> = vec![&steady[0]];
        node.extend(self.node_extra.iter().map(PathBuf::as_path));
        // A killed leader: the live members elect another one before they take writes.
        self.put(&format!("/lc/apps/{step}"), &value(&[&under_prefix]));
        let started = Instant::now();
        self.put("/lc/node", &value(&node));
        let marker = format!("{step}-line");
        self.wait(
            &format!("the change of {step} to reach the agent"),
            CHANGE_WITHIN,
            || {
                (self.shipped(&under_prefix, &marker) && self.shipped(&under_key, &marker))
                    .then_some(())
            },
        );
        let took = started.elapsed();
        eprintln!("{step}: the change reached the agent in {took:?}");
        took
    }

    /// The steady tailers were started once and never stopped, restarted or paused.
    fn steady_tailers_never_stopped(&mut self) {
        let log = self.agent.log();
        let status = self.agent.status();
        for path in self.steady_paths() {
            let id = format!("app:{}", path.display());
            let starts = log
                .lines()
                .filter(|l| l.contains("tailer started") && l.contains(&id))
                .count();
            assert_eq!(starts, 1, "starts of {id}\n{log}");
            let tailer = status["tailers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["path"] == path.display().to_string())
                .unwrap_or_else(|| panic!("{id} not in {status}"));
            assert_eq!(tailer["restarts"], 0, "{tailer}");
            assert_eq!(tailer["state"], "running", "{tailer}");
        }
        self.steady_tailers_ship();
    }
}

/// Applies `fault` to each member in turn, then `recover`: meanwhile a change put through
/// the live members reaches the agent, and the steady tailers never stop.
fn each_member_in_turn(
    name: &str,
    fault: fn(&mut EtcdCluster, usize),
    recover: fn(&mut EtcdCluster, usize),
) {
    let mut f = Fixture::start();
    for member in 0..f.cluster.size() {
        fault(&mut f.cluster, member);
        f.change_arrives(&format!("{name}-{member}"));
        f.left_member(member);
        f.steady_tailers_never_stopped();
        f.stays_off_member(member);
        recover(&mut f.cluster, member);
    }
    f.change_arrives("all-back");
    f.steady_tailers_never_stopped();
}

#[test]
fn changes_reach_the_agent_through_the_live_members_while_each_member_is_killed() {
    each_member_in_turn("killed", EtcdCluster::kill, EtcdCluster::restart);
}

#[test]
fn changes_reach_the_agent_through_the_live_members_while_each_member_hangs() {
    each_member_in_turn("hung", EtcdCluster::freeze, EtcdCluster::thaw);
}

/// At the end every original member is gone: what the agent knows came through new ones.
#[test]
fn changes_reach_the_agent_while_each_member_is_replaced_by_an_empty_one() {
    each_member_in_turn("replaced", EtcdCluster::replace_empty, |_, _| {});
}

/// A member cut off from its cluster's leader (here: both others hung) stays up and
/// answers keep-alive pings, so only etcd's require-leader option ends the watches it
/// holds: they are canceled ("no leader") instead of staying open and silent. Once the
/// others are back the changes made meanwhile reach the agent.
#[test]
fn a_member_that_lost_its_leader_cancels_the_watches_instead_of_keeping_them_silent() {
    let mut f = Fixture::start_on(&[2]);
    f.cluster.freeze(0);
    f.cluster.freeze(1);
    let errors = f.wait(
        "every watch to end with \"no leader\"",
        CHANGE_WITHIN,
        || {
            let status = f.agent.status();
            let watches = status["sources"]["watches"].as_array()?.clone();
            let errors: Vec<String> = watches
                .iter()
                .filter(|w| w["state"] != "synced")
                .filter_map(|w| Some(w["error"].as_str()?.to_string()))
                .filter(|e| e.contains("no leader"))
                .collect();
            (errors.len() == STEADY.len()).then_some(errors)
        },
    );
    assert!(
        errors.iter().any(|e| e.starts_with("etcd key /lc/node: "))
            && errors
                .iter()
                .any(|e| e.starts_with("etcd prefix /lc/apps/: ")),
        "{errors:?}"
    );
    // Not connected, yet ready: the snapshots synced once stay in force.
    let port = f.agent.http_port;
    assert_eq!(common::metric(port, "logcatch_etcd_connected{}"), 0.0);
    assert_eq!(common::http_get(port, "/readyz").unwrap().0, 200);
    f.steady_tailers_ship();
    f.cluster.thaw(0);
    f.cluster.thaw(1);
    f.change_arrives("leader-back");
    f.steady_tailers_never_stopped();
}
