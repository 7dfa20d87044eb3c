//! A real FreeRADIUS accounting server for the end-to-end tests (Debian `freeradius`): its own
//! configuration in a scratch directory, every acknowledged record written to a detail file
//! the tests read back. Shared by the SIPp and scale-out tests.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};

/// Whether `freeradius` can run here; when it cannot and `B2BUA_REQUIRE_PEERS` is set, that
/// is a failure, not a skip.
pub fn available() -> bool {
    if std::process::Command::new("freeradius")
        .arg("-v")
        .output()
        .is_ok()
    {
        return true;
    }
    if std::env::var_os("B2BUA_REQUIRE_PEERS").is_some() {
        panic!("freeradius is not installed (Debian package freeradius) and B2BUA_REQUIRE_PEERS is set");
    }
    eprintln!("skipped: freeradius is not installed");
    false
}

/// The value of attribute `name` in a record from the detail file, if it has one.
pub fn attr_or<'a>(rec: &'a [(String, String)], name: &str) -> Option<&'a str> {
    rec.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The value of attribute `name` in a record from the detail file.
pub fn attr<'a>(rec: &'a [(String, String)], name: &str) -> &'a str {
    attr_or(rec, name).unwrap_or_else(|| panic!("no {name} in {rec:?}"))
}

/// A FreeRADIUS server (Debian `freeradius`) on 127.0.0.1:`port` that writes every
/// accounting record it acknowledges to `<dir>/acct/detail`.
pub struct FreeRadius {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl FreeRadius {
    pub fn configure(dir: &Path, port: u16, secret: &str) -> FreeRadius {
        for d in ["acct", "run", "log"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let d = dir.display();
        std::fs::write(dir.join("dictionary"), "").unwrap();
        std::fs::write(
            dir.join("radiusd.conf"),
            format!(
                "prefix = /usr\nexec_prefix = /usr\nsysconfdir = /etc\nlocalstatedir = /var\n\
sbindir = /usr/sbin\nlogdir = {d}/log\nraddbdir = {d}\nradacctdir = {d}/acct\nname = freeradius\n\
confdir = {d}\nrun_dir = {d}/run\ndb_dir = {d}\nlibdir = /usr/lib/freeradius\n\
pidfile = {d}/run/radiusd.pid\nmax_request_time = 30\ncleanup_delay = 5\nmax_requests = 16384\n\
hostname_lookups = no\nlog {{\n destination = stdout\n}}\nsecurity {{\n allow_core_dumps = no\n}}\n\
thread pool {{\n start_servers = 1\n max_servers = 2\n min_spare_servers = 1\n max_spare_servers = 2\n max_requests_per_server = 0\n}}\n\
client local {{\n ipaddr = 127.0.0.1\n secret = {secret}\n}}\n\
modules {{\n detail {{\n  filename = {d}/acct/detail\n  permissions = 0600\n  header = \"%t\"\n }}\n}}\n\
server default {{\n listen {{\n  type = acct\n  ipaddr = 127.0.0.1\n  port = {port}\n }}\n accounting {{\n  detail\n }}\n}}\n"
            ),
        )
        .unwrap();
        FreeRadius {
            dir: dir.to_path_buf(),
            port,
            child: None,
        }
    }

    /// Starts the server and waits until its port is taken.
    pub async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log/stdout"))
            .unwrap();
        let child = Command::new("freeradius")
            .args(["-f", "-l", "stdout", "-d"])
            .arg(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("freeradius starts");
        self.child = Some(child);
        for _ in 0..100 {
            if UdpSocket::bind(("127.0.0.1", self.port)).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "freeradius did not bind 127.0.0.1:{}:\n{}",
            self.port,
            std::fs::read_to_string(self.dir.join("log/stdout")).unwrap_or_default()
        );
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    /// Waits (10 s at most) for `n` records in the detail file; returns how many there are.
    pub async fn wait_records(&self, n: usize) -> usize {
        for _ in 0..100 {
            if self.records().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.records().len()
    }

    /// The records in the detail file, each as its attributes (Cisco's `name=` prefix and
    /// the quotes taken off the values).
    pub fn records(&self) -> Vec<Vec<(String, String)>> {
        let text = std::fs::read_to_string(self.dir.join("acct/detail")).unwrap_or_default();
        text.split("\n\n")
            .filter(|r| !r.trim().is_empty())
            .map(|r| {
                r.lines()
                    .filter_map(|l| l.trim().split_once(" = "))
                    .map(|(k, v)| {
                        let v = v.trim_matches('"');
                        let v = v.strip_prefix(&format!("{k}=")).unwrap_or(v);
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            })
            .collect()
    }
}
