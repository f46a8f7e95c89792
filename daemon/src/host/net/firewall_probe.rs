//! Finds a foreign firewall that drops forwarded traffic (Docker sets the iptables FORWARD
//! policy to DROP; a libvirt/Incus user trap): guests on our NAT networks would reach the
//! host but nothing beyond. We only report it, with the fix: the host's rules are not ours.

/// One forward chain (not ours) whose policy drops.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ForeignDrop {
    /// `table ip filter chain FORWARD`.
    pub chain: String,
    /// What to run so our bridges' traffic passes.
    pub fix: String,
}

/// Reads `nft list ruleset` text: base chains on the forward hook with `policy drop`,
/// outside our `novacron-*` tables.
pub fn forward_drops(ruleset: &str) -> Vec<ForeignDrop> {
    let mut out = Vec::new();
    let mut table: Option<(String, String)> = None;
    let mut chain: Option<String> = None;
    for line in ruleset.lines() {
        let l = line.trim();
        let mut w = l.split_ascii_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("table"), Some(fam), Some(name)) => {
                table = Some((fam.to_owned(), name.to_owned()));
            }
            (Some("chain"), Some(name), _) => chain = Some(name.to_owned()),
            _ => {}
        }
        let (Some((fam, t)), Some(c)) = (&table, &chain) else {
            continue;
        };
        if t.starts_with("novacron-") || !l.contains("hook forward") || !l.contains("policy drop") {
            continue;
        }
        let docker = t == "filter" && fam == "ip" && ruleset.contains("chain DOCKER-USER");
        let fix = if docker {
            "iptables -I DOCKER-USER -i <bridge> -j ACCEPT; iptables -I DOCKER-USER -o <bridge> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT (Docker's FORWARD policy is DROP)".to_owned()
        } else {
            format!(
                "nft insert rule {fam} {t} {c} iifname \"<bridge>\" accept; nft insert rule {fam} {t} {c} oifname \"<bridge>\" ct state established,related accept"
            )
        };
        out.push(ForeignDrop {
            chain: format!("table {fam} {t} chain {c}"),
            fix,
        });
    }
    out
}

/// Legacy iptables (not visible to nft): the FORWARD policy, when the legacy tool exists.
pub fn legacy_forward_drop() -> Option<ForeignDrop> {
    let out = std::process::Command::new("iptables-legacy")
        .args(["-S", "FORWARD"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().any(|l| l.trim() == "-P FORWARD DROP").then(|| ForeignDrop {
        chain: "iptables-legacy filter FORWARD".into(),
        fix: "iptables-legacy -I FORWARD -i <bridge> -j ACCEPT; iptables-legacy -I FORWARD -o <bridge> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
    })
}

/// The probe: every foreign forward-dropping chain, nft and legacy.
pub fn probe() -> Vec<ForeignDrop> {
    let mut v = super::nft::list_ruleset()
        .map(|r| forward_drops(&r))
        .unwrap_or_default();
    v.extend(legacy_forward_drop());
    v
}
