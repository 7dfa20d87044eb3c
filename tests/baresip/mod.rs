//! baresip, a real softphone, as a caller and as a gateway: it dials once (or answers every
//! call) from a configuration written into the test's directory (no registration, PCMU, a
//! tone from a WAV file as its microphone), and hangs up or quits when its time is up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether baresip is installed.
pub fn available() -> bool {
    Path::new("/usr/lib/baresip/modules/account.so").exists()
        && Command::new("baresip")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
}

/// How the call is placed.
pub struct Dial<'a> {
    /// The caller's number (its From user).
    pub ani: &'a str,
    /// The Request-URI, e.g. `sip:5551201…@127.0.0.1:5061;transport=tls`.
    pub uri: &'a str,
    /// The CA that signed our certificate.
    pub ca: &'a Path,
    /// `srtp-mand` to insist on SRTP (SDES), or empty for plain RTP.
    pub mediaenc: &'a str,
    /// How long baresip runs before it hangs up and quits.
    pub seconds: u32,
}

/// A baresip home in `dir/name`: its config with `extra` lines, one account, and a tone.
fn home(dir: &Path, name: &str, ca: &Path, account: &str, extra: &str, seconds: u32) -> PathBuf {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let tone = home.join("tone.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&tone, spec).unwrap();
    for i in 0..8000 * (seconds + 2) {
        let x = (f64::from(i) * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin();
        w.write_sample((x * 8000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    let sip_port = free_port();
    std::fs::write(
        home.join("config"),
        format!(
            // srtp before account: an account's mediaenc must be known when it is read.
            "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nsip_cafile {}\n{extra}\
audio_source aufile,{}\nmodule_path /usr/lib/baresip/modules\n\
module srtp.so\nmodule account.so\nmodule menu.so\nmodule g711.so\nmodule aufile.so\n",
            ca.display(),
            tone.display()
        ),
    )
    .unwrap();
    std::fs::write(home.join("accounts"), format!("{account}\n")).unwrap();
    home
}

fn free_port() -> u16 {
    // baresip listens for TLS on the port after its SIP port: find a pair that is free.
    loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < 65000
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
}

fn mediaenc(enc: &str) -> String {
    if enc.is_empty() {
        String::new()
    } else {
        format!(";mediaenc={enc}")
    }
}

/// Its output, one line per status update (it rewrites its status line with carriage
/// returns), without the echo of the command typed.
fn readable(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .split(['\r', '\n'])
        .filter(|l| !l.starts_with("/d") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        + &String::from_utf8_lossy(&out.stderr)
}

/// The highest receive rate baresip's status line showed (`audio=TX/RX (bit/s)`), in bit/s:
/// about 64,000 while G.711 audio arrives and opens, 0 while none does.
pub fn heard(log: &str) -> u32 {
    log.split("audio=")
        .skip(1)
        .filter_map(|s| s.split_once('/')?.1.split(' ').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Runs one call to its end and returns what baresip printed.
pub async fn call(dir: &Path, d: Dial<'_>) -> String {
    let account = format!(
        "<sip:{}@127.0.0.1>;regint=0;audio_codecs=PCMU{}",
        d.ani,
        mediaenc(d.mediaenc)
    );
    let home = home(dir, "baresip", d.ca, &account, "", d.seconds);
    let out = tokio::process::Command::new("baresip")
        .arg("-f")
        .arg(&home)
        .arg("-e")
        .arg(format!("/dial {}", d.uri))
        .arg("-t")
        .arg(d.seconds.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(u64::from(d.seconds) + 30), out)
        .await
        .expect("baresip quits")
        .expect("baresip runs");
    readable(&out)
}

/// A softphone subscriber: baresip registers `user@domain` with `password` through our
/// node at `outbound` (UDP), dials `number` once registered, and quits after `seconds`.
/// (`ca` is any CA file: baresip will not start without one, though nothing here is TLS.)
#[allow(clippy::too_many_arguments)]
pub async fn subscriber(
    dir: &Path,
    ca: &Path,
    user: &str,
    domain: &str,
    password: &str,
    outbound: std::net::SocketAddr,
    number: &str,
    seconds: u32,
) -> String {
    let account = format!(
        "<sip:{user}@{domain}>;auth_pass={password};outbound=\"sip:{outbound}\";regint=600;audio_codecs=PCMU"
    );
    let home = home(dir, "subscriber", ca, &account, "", seconds);
    let out = tokio::process::Command::new("baresip")
        .arg("-f")
        .arg(&home)
        .arg("-e")
        .arg(format!("/dial {number}"))
        .arg("-t")
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(u64::from(seconds) + 30), out)
        .await
        .expect("baresip quits")
        .expect("baresip runs");
    readable(&out)
}

/// baresip answering calls: as a carrier's gateway on TLS ([`Gateway::start`]), or as a
/// registered subscriber ([`Gateway::answering`]).
pub struct Gateway {
    child: Option<tokio::process::Child>,
    /// Its TLS address (a subscriber's: the node it registers through).
    pub tls: std::net::SocketAddr,
}

impl Gateway {
    /// A carrier's gateway on TLS: it answers every call to `user` at once, with `enc` as its
    /// media encryption, presenting `cert` (certificate and key in one PEM file), for
    /// `seconds`. It listens once this returns.
    pub async fn start(
        dir: &Path,
        user: &str,
        ca: &Path,
        cert_and_key: &Path,
        enc: &str,
        seconds: u32,
    ) -> Gateway {
        let account = format!(
            "<sip:{user}@127.0.0.1>;regint=0;audio_codecs=PCMU;answermode=auto{}",
            mediaenc(enc)
        );
        let extra = format!("sip_certificate {}\n", cert_and_key.display());
        let home = home(dir, "baresip-gw", ca, &account, &extra, seconds);
        let config = std::fs::read_to_string(home.join("config")).unwrap();
        let port: u16 = config
            .lines()
            .find_map(|l| l.strip_prefix("sip_listen 127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok())
            .unwrap();
        let child = spawn(&home, seconds);
        let tls = std::net::SocketAddr::from(([127, 0, 0, 1], port + 1));
        for _ in 0..50 {
            if std::net::TcpStream::connect(tls).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Gateway {
            child: Some(child),
            tls,
        }
    }

    /// A softphone subscriber that answers: baresip registers `user@domain` with `password`
    /// through our node at `outbound` (over TCP with `tcp`, else UDP) and answers every call
    /// at once, for `seconds`. Registered a moment after this returns.
    #[allow(clippy::too_many_arguments)]
    pub fn answering(
        dir: &Path,
        ca: &Path,
        user: &str,
        domain: &str,
        password: &str,
        outbound: std::net::SocketAddr,
        tcp: bool,
        seconds: u32,
    ) -> Gateway {
        let transport = if tcp { ";transport=tcp" } else { "" };
        let account = format!(
            "<sip:{user}@{domain}>;auth_pass={password};outbound=\"sip:{outbound}{transport}\";\
regint=600;audio_codecs=PCMU;answermode=auto"
        );
        let home = home(dir, "answering", ca, &account, "", seconds);
        Gateway {
            child: Some(spawn(&home, seconds)),
            tls: outbound,
        }
    }

    /// Waits for it to quit when its time is up (so that it flushes what it printed: a
    /// killed baresip loses its buffered output), and returns what it printed.
    pub async fn output(mut self) -> String {
        let child = self.child.take().unwrap();
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("baresip quits when its time is up")
            .expect("baresip ends");
        readable(&out)
    }
}

/// baresip running from `home` for `seconds`, its output kept for [`Gateway::output`].
fn spawn(home: &Path, seconds: u32) -> tokio::process::Child {
    tokio::process::Command::new("baresip")
        .arg("-f")
        .arg(home)
        .arg("-t")
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("baresip runs")
}
