//! baresip, a real softphone, as a caller: it dials once from a configuration written into
//! the test's directory (no registration, PCMU, a tone from a WAV file as its microphone),
//! and hangs up when its time is up.

use std::path::Path;
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

/// Runs one call to its end and returns what baresip printed.
pub async fn call(dir: &Path, d: Dial<'_>) -> String {
    let home = dir.join("baresip");
    std::fs::create_dir_all(&home).unwrap();
    let tone = home.join("tone.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&tone, spec).unwrap();
    for i in 0..8000 * (d.seconds + 2) {
        let x = (f64::from(i) * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin();
        w.write_sample((x * 8000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    let sip_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        home.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nsip_cafile {}\n\
audio_source aufile,{}\nmodule_path /usr/lib/baresip/modules\n\
module account.so\nmodule menu.so\nmodule g711.so\nmodule aufile.so\nmodule srtp.so\n",
            d.ca.display(),
            tone.display()
        ),
    )
    .unwrap();
    let enc = if d.mediaenc.is_empty() {
        String::new()
    } else {
        format!(";mediaenc={}", d.mediaenc)
    };
    std::fs::write(
        home.join("accounts"),
        format!(
            "<sip:{}@127.0.0.1>;regint=0;audio_codecs=PCMU{enc}\n",
            d.ani
        ),
    )
    .unwrap();
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
    // Its status line repeats with carriage returns; one line each is enough to read.
    String::from_utf8_lossy(&out.stdout)
        .split(['\r', '\n'])
        .filter(|l| !l.starts_with("/d") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        + &String::from_utf8_lossy(&out.stderr)
}
