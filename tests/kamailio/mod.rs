//! A real Kamailio as a termination carrier in front of a SIPp gateway: `carrier.cfg` checks
//! digest credentials with its own auth and auth_db modules, so our answers to its challenges
//! are verified by a SIP stack that is not ours; `tls_carrier.cfg` takes our calls over TLS
//! (its tls module, on OpenSSL), so our handshake and certificate checks meet another stack.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether Kamailio is installed.
pub fn available() -> bool {
    Command::new("kamailio")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A running Kamailio, killed with its children when dropped.
pub struct Kamailio {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- kamailio ---\n{}", self.log());
        }
        // The whole process group: Kamailio's children outlive a killed main process.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Kamailio {
    /// A carrier on 127.0.0.1:`listen` that knows `users` (name, password) in realm
    /// `carrier.example` and passes the calls it accepts to a gateway on `gateway`.
    pub async fn carrier(dir: &Path, listen: u16, gateway: u16, users: &[(&str, &str)]) -> Self {
        let db = dir.join("kamailio-db");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(
            db.join("version"),
            "id(int,auto) table_name(string) table_version(int) \n0:version:1\n0:subscriber:7\n",
        )
        .unwrap();
        let mut subscribers =
            "id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string) \n"
                .to_string();
        for (i, (user, password)) in users.iter().enumerate() {
            subscribers.push_str(&format!(
                "{}:{user}:carrier.example:{password}:x:x\n",
                i + 1
            ));
        }
        std::fs::write(db.join("subscriber"), subscribers).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kamailio/carrier.cfg");
        let cfg = std::fs::read_to_string(shipped)
            .unwrap()
            .replace("LISTEN_PORT", &listen.to_string())
            .replace("GATEWAY_PORT", &gateway.to_string())
            .replace("DB_DIR", &db.display().to_string());
        Kamailio::run(dir, "carrier.cfg", &cfg).await
    }

    /// A carrier taking calls over TLS on 127.0.0.1:`tls` (and UDP on `udp`), presenting
    /// `cert` and `key`, and passing them to a gateway on `gateway` over UDP.
    pub async fn tls_carrier(
        dir: &Path,
        udp: u16,
        tls: u16,
        gateway: u16,
        cert: &Path,
        key: &Path,
    ) -> Self {
        let tls_cfg = dir.join("kamailio-tls.cfg");
        std::fs::write(
            &tls_cfg,
            format!(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n\
require_certificate = no\nprivate_key = {}\ncertificate = {}\n\n\
[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n",
                key.display(),
                cert.display()
            ),
        )
        .unwrap();
        let shipped =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kamailio/tls_carrier.cfg");
        let cfg = std::fs::read_to_string(shipped)
            .unwrap()
            .replace("UDP_PORT", &udp.to_string())
            .replace("TLS_PORT", &tls.to_string())
            .replace("GATEWAY_PORT", &gateway.to_string())
            .replace("TLS_CFG", &tls_cfg.display().to_string());
        Kamailio::run(dir, "tls_carrier.cfg", &cfg).await
    }

    /// Starts Kamailio on a configuration written into `dir`, once it listens.
    async fn run(dir: &Path, name: &str, cfg: &str) -> Self {
        let path = dir.join(name);
        std::fs::write(&path, cfg).unwrap();
        let log = dir.join("kamailio.err");
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(&path)
            .args(["-DD", "-E", "-m", "32", "-M", "8", "-w"])
            .arg(dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("kamailio starts");
        let k = Kamailio { child, log };
        // Up once it says it listens and its workers had a moment to start.
        for _ in 0..50 {
            if k.log().contains("Listening on") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        k
    }

    /// The module Kamailio's TLS support lives in, which Debian ships apart.
    pub fn has_tls() -> bool {
        Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so").exists()
    }

    /// What Kamailio logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
