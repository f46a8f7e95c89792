//! A UDP flood for bandwidth tests (moved from nic_qos.rs, shared with nic_guest.rs): a
//! python3 sender run in a network namespace for 2 s, the bytes the far side counted over
//! the flood, and the check that a limit held.

use std::time::Instant;

use super::netns::ok;

/// Sends UDP datagrams of 1400 bytes for `secs` seconds as fast as it can; prints the bytes
/// the kernel took and how long it sent.
pub const UDP_FLOOD: &str = r#"
import socket, sys, time
dst, secs = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
buf, sent = b'x' * 1400, 0
start = time.monotonic()
end = start + secs
while time.monotonic() < end:
    try:
        sent += s.sendto(buf, (dst, 9))
    except (BlockingIOError, OSError):
        time.sleep(0.0005)
print(sent, time.monotonic() - start)
"#;

pub struct Transfer {
    /// Bytes the sender handed its kernel.
    pub offered: u64,
    /// How long it sent (s).
    pub sending: f64,
    /// Bytes that arrived at the far side, counted over `window` (s), which covers the
    /// whole flood (the sender's start-up included).
    pub arrived: u64,
    pub window: f64,
}

/// Runs the 2 s flood from namespace `ns` to `dst`: (bytes offered, seconds sending).
pub fn send(ns: &str, dst: &str) -> (u64, f64) {
    let out = ok(
        "ip",
        &["netns", "exec", ns, "python3", "-c", UDP_FLOOD, dst, "2"],
    );
    let mut it = out.split_whitespace();
    (
        it.next().unwrap().parse().unwrap(),
        it.next().unwrap().parse().unwrap(),
    )
}

/// A 2 s flood from namespace `ns` to `dst`; `arrived` is the delta of `rx_bytes` (the far
/// side's received-bytes counter) read before and after.
pub fn flood(ns: &str, dst: &str, mut rx_bytes: impl FnMut() -> u64) -> Transfer {
    let rx0 = rx_bytes();
    let t0 = Instant::now();
    let (offered, sending) = send(ns, dst);
    let window = t0.elapsed().as_secs_f64();
    Transfer {
        offered,
        sending,
        arrived: rx_bytes() - rx0,
        window,
    }
}

impl Transfer {
    /// Checks the limit held: at most `rate` over the window plus the bucket (+10 % and ten
    /// frames for timer granularity), at least half of `rate` while sending, and, `policed`,
    /// the sender offered far more (a shaper queues instead: the sender's socket waits).
    /// Returns the rate while sending (B/s).
    #[track_caller]
    pub fn held(&self, what: &str, rate: f64, bucket: f64, policed: bool) -> f64 {
        let got = self.arrived as f64 / self.sending;
        eprintln!(
            "{what}: offered {} B, arrived {} B; {:.2} s sending ({:.2} s window): {:.0} B/s, limit {rate:.0} B/s",
            self.offered, self.arrived, self.sending, self.window, got
        );
        let cap = (rate * self.window + bucket) * 1.1 + 10.0 * 1500.0;
        assert!(
            (self.arrived as f64) <= cap,
            "{what} not throttled: {} B > {cap:.0} B",
            self.arrived
        );
        assert!(got > 0.5 * rate, "{what} far below the limit: {got:.0} B/s");
        assert!(
            !policed || self.offered as f64 > 4.0 * self.arrived as f64,
            "{what}: the sender did not exceed the limit: offered {} B",
            self.offered
        );
        got
    }
}
