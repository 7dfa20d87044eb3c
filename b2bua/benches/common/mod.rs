//! What the SIPp-driven benchmarks share: free ports, and reading SIPp's statistics and
//! response-time traces.

use std::net::UdpSocket;
use std::path::Path;

/// A UDP port nothing listens on now.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `p` quantile of `v` (sorted in place); NaN for none.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Response times (ms) of rtd 1 and rtd 2 from SIPp's `-trace_rtt` file.
pub fn rtts(path: &Path) -> (Vec<f64>, Vec<f64>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split(';').collect();
        // date_ms;response_time_ms;rtd_no
        if cols.len() >= 3 {
            let Ok(ms) = cols[1].trim().parse::<f64>() else {
                continue;
            };
            match cols[2].trim() {
                "1" => one.push(ms),
                "2" => two.push(ms),
                _ => {}
            }
        }
    }
    (one, two)
}

/// Successful and failed call counts from SIPp's final statistics line.
pub fn counts(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return (0, 0);
    };
    let Some(last) = text.lines().last() else {
        return (0, 0);
    };
    let names: Vec<&str> = header.split(';').collect();
    let vals: Vec<&str> = last.split(';').collect();
    let get = |n: &str| {
        names
            .iter()
            .position(|h| *h == n)
            .and_then(|i| vals.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

/// Whether SIPp is installed (a benchmark without it says so and measures nothing).
pub fn have_sipp() -> bool {
    std::process::Command::new("sipp")
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok()
}
