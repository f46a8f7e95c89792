//! The DHCP client of the `dhcp` figure: a network namespace of its own (a thread that
//! unshared its network namespace; veth ends are moved into it by that thread's id) and a
//! raw DHCP DISCOVER over a UDP socket bound to the veth end, broadcast, resent every 5 ms
//! until an OFFER with our transaction id arrives. No lease is taken (no REQUEST): "DHCP
//! ready" is the server answering, not a client's own timers (udhcpc waits whole seconds).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often the DISCOVER is resent while no OFFER came.
const RESEND: Duration = Duration::from_millis(5);

enum Ask {
    /// Bring the link up inside the namespace.
    Up(String, mpsc::Sender<Result<()>>),
    /// DISCOVER on the link with this chaddr until an OFFER or the deadline.
    Discover(String, [u8; 6], Duration, mpsc::Sender<Result<Ipv4Addr>>),
}

/// The namespace thread.
pub struct Probe {
    tid: i32,
    tx: mpsc::Sender<Ask>,
}

impl Probe {
    pub fn new() -> Result<Probe> {
        let (tx, rx) = mpsc::channel::<Ask>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<i32>>();
        std::thread::Builder::new()
            .name("dhcp-probe".into())
            .spawn(move || {
                #[allow(unsafe_code)]
                // SAFETY: plain syscalls with constant arguments; unshare changes only this
                // thread's network namespace.
                let (rc, tid) = unsafe {
                    (
                        nix::libc::unshare(nix::libc::CLONE_NEWNET),
                        nix::libc::gettid(),
                    )
                };
                if rc != 0 {
                    let _ = ready_tx.send(Err(anyhow::anyhow!(
                        "unshare: {}",
                        std::io::Error::last_os_error()
                    )));
                    return;
                }
                let _ = ready_tx.send(Ok(tid));
                for ask in rx {
                    match ask {
                        // A child spawned from this thread starts in its network namespace.
                        Ask::Up(link, reply) => {
                            let _ = reply.send(ip(&["link", "set", &link, "up"]));
                        }
                        Ask::Discover(link, mac, deadline, reply) => {
                            let _ = reply.send(discover(&link, mac, deadline));
                        }
                    }
                }
            })?;
        let tid = ready_rx.recv().context("probe thread")??;
        Ok(Probe { tid, tx })
    }

    /// Moves `link` (of the caller's namespace) into the probe's and brings it up there.
    pub fn adopt(&self, link: &str) -> Result<()> {
        ip(&["link", "set", link, "netns", &self.tid.to_string()])?;
        let (tx, rx) = mpsc::channel();
        self.tx.send(Ask::Up(link.to_owned(), tx))?;
        rx.recv()?
    }

    /// DISCOVERs on `link` until an OFFER; the offered address.
    pub fn offer(&self, link: &str, mac: [u8; 6], deadline: Duration) -> Result<Ipv4Addr> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Ask::Discover(link.to_owned(), mac, deadline, tx))?;
        rx.recv()?
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

const COOKIE: [u8; 4] = [99, 130, 83, 99];

/// A DHCPDISCOVER (RFC 2131) with the broadcast flag: the server answers by broadcast, as
/// the client has no address yet.
pub fn discover_packet(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast flag
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&COOKIE);
    p.extend_from_slice(&[53, 1, 1]); // DHCPDISCOVER
    p.extend_from_slice(&[55, 3, 1, 3, 6]); // subnet mask, router, DNS
    p.push(255);
    p
}

/// The offered address when `p` is a DHCPOFFER answering `xid`.
pub fn parse_offer(p: &[u8], xid: u32) -> Option<Ipv4Addr> {
    if p.len() < 240 || p[0] != 2 || p[4..8] != xid.to_be_bytes() || p[236..240] != COOKIE {
        return None;
    }
    let mut i = 240;
    while i < p.len() {
        match p[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = *p.get(i + 1)? as usize;
                let val = p.get(i + 2..i + 2 + len)?;
                if code == 53 && val == [2] {
                    return Some(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
                }
                i += 2 + len;
            }
        }
    }
    None
}

fn discover(link: &str, mac: [u8; 6], deadline: Duration) -> Result<Ipv4Addr> {
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))
        .context("bind udp/68 in the probe namespace")?;
    sock.set_broadcast(true)?;
    let name = link.as_bytes();
    #[allow(unsafe_code)]
    // SAFETY: the option value is the interface name's bytes, alive across the call.
    let rc = unsafe {
        nix::libc::setsockopt(
            sock.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as nix::libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!(
            "SO_BINDTODEVICE {link}: {}",
            std::io::Error::last_os_error()
        );
    }
    sock.set_read_timeout(Some(RESEND))?;
    let xid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ std::process::id();
    let packet = discover_packet(xid, mac);
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let t0 = Instant::now();
    let mut buf = [0u8; 1500];
    loop {
        if t0.elapsed() > deadline {
            bail!("no DHCPOFFER on {link} within {deadline:?}");
        }
        // The link may not carry yet (its peer joins the bridge after the start): retried.
        if let Err(e) = sock.send_to(&packet, server) {
            if t0.elapsed() > deadline / 2 {
                return Err(e).with_context(|| format!("send DISCOVER on {link}"));
            }
            std::thread::sleep(RESEND);
            continue;
        }
        let sent = Instant::now();
        // Read until the next resend is due.
        while sent.elapsed() < RESEND {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Some(a) = parse_offer(&buf[..n], xid) {
                        return Ok(a);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
