//! Persistent domain definitions: `<state>/domains/<name>.xml`, libvirt XML.

use std::io;
use std::path::{Path, PathBuf};

use novacron_domain::{DomainConfig, ValidatedDomain, MAX_DOCUMENT_BYTES};

use super::{atomic, file_for, join_problem, scan, Others, Problem};

const EXT: &str = ".xml";
/// Definitions hold host paths and guest identity: owner-only.
const MODE: u32 = 0o600;

/// The rules a definition was accepted under, which its starts are held to (whoever starts
/// it: an autostart runs as the daemon, yet must not open what the definer could not name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Defined by an admin: its host paths are taken as written.
    Admin,
    /// Any other role, or written before the mark existed: storage roots only.
    Restricted,
}

/// First line of an admin definition's file. Kept outside `<domain>` rather than in
/// `<metadata>` (libvirt writes a comment header the same way): no input can produce it,
/// since definitions are written from the model and always begin with `<domain`, while
/// `<metadata>` is caller-supplied text kept verbatim (a forged mark there would be one
/// define away). Written in the same atomic file as the XML, so the mark and the paths it
/// vouches for can never disagree; a file without it (older, or restricted) is restricted.
const ADMIN_MARK: &str = "<!-- novacron: accepted under admin rules -->\n";

fn render(config: &DomainConfig, trust: Trust) -> Vec<u8> {
    let xml = config.to_xml();
    match trust {
        Trust::Admin => format!("{ADMIN_MARK}{xml}").into_bytes(),
        Trust::Restricted => xml.into_bytes(),
    }
}

#[derive(Debug, Clone)]
pub struct DefinitionStore {
    dir: PathBuf,
}

impl DefinitionStore {
    pub fn new(dir: PathBuf) -> Self {
        DefinitionStore { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every valid definition, sorted by name, plus one Problem per file that is not one
    /// (foreign, unreadable, too large, bad XML, invalid, or named unlike its file).
    /// Never deletes or renames anything.
    pub fn load_all(&self) -> (Vec<(ValidatedDomain, Trust)>, Vec<Problem>) {
        scan(&self.dir, EXT, Others::Report, MAX_DOCUMENT_BYTES, parse)
    }

    /// Async wrapper: `load_all` on the blocking pool.
    pub async fn load_all_async(&self) -> (Vec<(ValidatedDomain, Trust)>, Vec<Problem>) {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.load_all())
            .await
            .unwrap_or_else(|e| join_problem(&self.dir, e))
    }

    /// Write `config` as `<name>.xml` with its trust mark, atomically and durably.
    pub fn save_blocking(&self, config: &DomainConfig, trust: Trust) -> io::Result<()> {
        let path = file_for(&self.dir, &config.name, EXT)?;
        atomic::write_atomic(&path, &render(config, trust), MODE)
    }

    pub async fn save(&self, config: &DomainConfig, trust: Trust) -> io::Result<()> {
        let path = file_for(&self.dir, &config.name, EXT)?;
        atomic::write_atomic_async(path, render(config, trust), MODE).await
    }

    /// Remove `<name>.xml`; `Ok(false)` if there was none.
    pub fn remove_blocking(&self, name: &str) -> io::Result<bool> {
        atomic::remove_durable(&file_for(&self.dir, name, EXT)?)
    }

    pub async fn remove(&self, name: &str) -> io::Result<bool> {
        atomic::remove_durable_async(file_for(&self.dir, name, EXT)?).await
    }
}

fn parse(stem: &str, bytes: Vec<u8>) -> Result<(ValidatedDomain, Trust), String> {
    let text = String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let (trust, xml) = match text.strip_prefix(ADMIN_MARK) {
        Some(rest) => (Trust::Admin, rest),
        None => (Trust::Restricted, text.as_str()),
    };
    let config = DomainConfig::from_xml(xml).map_err(|e| e.to_string())?;
    if config.name != stem {
        return Err(format!(
            "defines domain {:?} but the file name says {stem:?}",
            config.name
        ));
    }
    config
        .validate()
        .map(|v| (v, trust))
        .map_err(|e| format!("invalid definition: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn xml(name: &str) -> String {
        format!(
            "<domain type='kvm'>\n  <name>{name}</name>\n  \
             <uuid>c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f</uuid>\n  \
             <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n  \
             <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n  </os>\n</domain>\n"
        )
    }

    pub(crate) fn config(name: &str) -> DomainConfig {
        DomainConfig::from_xml(&xml(name)).unwrap()
    }

    fn reasons(problems: &[Problem]) -> Vec<(String, String)> {
        problems
            .iter()
            .map(|p| {
                let file = p.path.file_name().unwrap().to_string_lossy().into_owned();
                (file, p.reason.clone())
            })
            .collect()
    }

    #[tokio::test]
    async fn save_load_remove_roundtrip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DefinitionStore::new(tmp.path().to_owned());
        for (name, trust) in [
            ("b", Trust::Restricted),
            ("a", Trust::Admin),
            ("c", Trust::Restricted),
        ] {
            store.save(&config(name), trust).await.unwrap();
        }
        let (defs, problems) = store.load_all_async().await;
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = defs.iter().map(|(d, _)| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(defs[0].0.config(), &config("a"));
        // The mark round-trips; a file without it (written before it existed) is restricted.
        assert_eq!(defs[0].1, Trust::Admin);
        assert_eq!(defs[1].1, Trust::Restricted);
        std::fs::write(tmp.path().join("c.xml"), xml("c")).unwrap();
        assert_eq!(store.load_all().0[2].1, Trust::Restricted);
        // A mark anywhere but the very start (e.g. inside <metadata>) grants nothing.
        let forged = xml("c").replace(
            "<vcpu>",
            &format!("<metadata>{ADMIN_MARK}</metadata><vcpu>"),
        );
        std::fs::write(tmp.path().join("c.xml"), forged).unwrap();
        assert_eq!(store.load_all().0[2].1, Trust::Restricted);
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(tmp.path().join("a.xml")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);

        assert!(store.remove("b").await.unwrap());
        assert!(!store.remove("b").await.unwrap());
        match store.remove("../x").await {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Custom { kind: InvalidInput, error: "\"../x\" is not usable as a file name" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        let mut bad = config("x");
        bad.name = "../escape".into();
        match store.save(&bad, Trust::Admin).await {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Custom { kind: InvalidInput, error: "\"../escape\" is not usable as a file name" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        assert_eq!(store.load_all().0.len(), 2);
    }

    #[test]
    fn missing_dir_is_empty() {
        let store = DefinitionStore::new("/nonexistent/novacron/domains".into());
        let (defs, problems) = store.load_all();
        assert!(defs.is_empty() && problems.is_empty());
    }

    #[test]
    fn bad_files_are_reported_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let store = DefinitionStore::new(d.to_owned());
        store.save_blocking(&config("good"), Trust::Admin).unwrap();
        std::fs::write(d.join("README"), "hi").unwrap();
        std::fs::write(d.join(".good.xml.tmp.123.4"), "half written").unwrap();
        std::fs::write(d.join("broken.xml"), "<domain>\n<name>broken</name>\n<oops").unwrap();
        std::fs::write(d.join("other.xml"), xml("someone")).unwrap();
        std::fs::write(d.join("latin1.xml"), b"<domain>\xe9</domain>").unwrap();
        std::fs::write(d.join("big.xml"), vec![b' '; MAX_DOCUMENT_BYTES + 1]).unwrap();
        let invalid = xml("invalid").replace("<vcpu>1</vcpu>", "<vcpu>0</vcpu>");
        std::fs::write(d.join("invalid.xml"), invalid).unwrap();
        std::fs::write(d.join("root.xml"), "<foo/>").unwrap();
        std::fs::create_dir(d.join("sub.xml")).unwrap();
        std::fs::create_dir(d.join("subdir")).unwrap();
        std::os::unix::fs::symlink(d.join("good.xml"), d.join("link.xml")).unwrap();
        nix::unistd::mkfifo(&d.join("fifo.xml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::write(d.join(".hidden.xml"), xml("hidden")).unwrap();

        let before: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let (defs, problems) = store.load_all();
        assert_eq!(defs.len(), 1);
        assert_eq!(defs[0].0.name, "good");
        let r = reasons(&problems);
        let has = |file: &str, text: &str| {
            assert!(
                r.iter().any(|(f, why)| f == file && why.contains(text)),
                "{file}: {text:?} not in {r:#?}"
            )
        };
        has(".hidden.xml", "not a domain name");
        has("README", "not a .xml file");
        has("big.xml", "over the 1048576 byte limit");
        has("broken.xml", "line 3");
        has("fifo.xml", "not a regular file");
        has("invalid.xml", "invalid definition: vcpu");
        has("latin1.xml", "not UTF-8");
        has("link.xml", "symbolic link");
        has(
            "other.xml",
            "defines domain \"someone\" but the file name says \"other\"",
        );
        has("root.xml", "root element must be <domain>");
        has("sub.xml", "directory");
        has("subdir", "directory");
        assert_eq!(problems.len(), 12, "{r:#?}");
        assert!(!r.iter().any(|(f, _)| f.contains(".tmp.")));
        let after: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(before.len(), after.len());
    }
}
