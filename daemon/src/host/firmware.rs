//! UEFI firmware autoselection (`<os firmware='efi'>` without a loader) from QEMU's firmware
//! descriptors, the interop spec libvirt uses (QEMU's `docs/interop/firmware.json`):
//! `*.json` files in `/usr/share/qemu/firmware` (the distribution's) and `/etc/qemu/firmware`
//! (the administrator's). A file in a later directory replaces the one of the same name in an
//! earlier one, an empty file masks it; the survivors are tried in file-name order (the
//! number prefix is the priority) and the first that fits the guest wins.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Searched in this order; later directories override earlier ones by file name.
pub const DESCRIPTOR_DIRS: &[&str] = &["/usr/share/qemu/firmware", "/etc/qemu/firmware"];

/// Bound on one descriptor file (the real ones are under 1 KiB).
const MAX_DESCRIPTOR: u64 = 64 << 10;

/// One usable descriptor: split flash firmware (code + variable store template), raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The descriptor file it came from.
    pub file: PathBuf,
    pub description: String,
    pub executable: PathBuf,
    pub nvram_template: PathBuf,
    /// `(architecture, machine globs)`.
    pub targets: Vec<(String, Vec<String>)>,
    pub features: BTreeSet<String>,
}

impl Descriptor {
    pub fn has(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }
}

/// What the guest asks of its firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wanted<'a> {
    pub arch: &'a str,
    /// The machine type's full name (`pc-q35-7.2`), as the descriptors' globs expect.
    pub machine: &'a str,
    pub secure_boot: Option<bool>,
    pub enrolled_keys: Option<bool>,
    /// `Some(false)` rules out firmware that requires SMM: the domain turns it off, or the
    /// host's KVM cannot run it.
    pub smm: Option<bool>,
    /// Why SMM is off, for the refusal (`the domain turns it off`, ...).
    pub smm_off: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Raw {
    #[serde(default)]
    description: String,
    #[serde(default)]
    interface_types: Vec<String>,
    mapping: RawMapping,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMapping {
    device: String,
    /// Flash only: `split` (default), `combined` or `stateless`.
    mode: Option<String>,
    executable: Option<RawFile>,
    nvram_template: Option<RawFile>,
}

#[derive(Deserialize)]
struct RawFile {
    filename: PathBuf,
    format: String,
}

#[derive(Deserialize)]
struct RawTarget {
    architecture: String,
    #[serde(default)]
    machines: Vec<String>,
}

/// Parses one descriptor; `Err` says why it cannot be used here (not UEFI, not split flash,
/// not raw, malformed).
pub fn parse(file: &Path, text: &str) -> Result<Descriptor, String> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| format!("not a descriptor: {e}"))?;
    if !raw.interface_types.iter().any(|t| t == "uefi") {
        return Err(format!(
            "interface types {:?}, not uefi",
            raw.interface_types
        ));
    }
    let m = raw.mapping;
    if m.device != "flash" {
        return Err(format!("device '{}' (only flash is supported)", m.device));
    }
    let mode = m.mode.as_deref().unwrap_or("split");
    if mode != "split" {
        return Err(format!("flash mode '{mode}' (only split is supported)"));
    }
    let raw_file = |f: Option<RawFile>, what: &str| -> Result<PathBuf, String> {
        let f = f.ok_or_else(|| format!("no {what}"))?;
        if f.format != "raw" {
            return Err(format!(
                "{what} format '{}' (only raw is supported)",
                f.format
            ));
        }
        if !f.filename.is_absolute() {
            return Err(format!("{what} {} is not absolute", f.filename.display()));
        }
        Ok(f.filename)
    };
    Ok(Descriptor {
        file: file.to_path_buf(),
        description: raw.description,
        executable: raw_file(m.executable, "executable")?,
        nvram_template: raw_file(m.nvram_template, "nvram-template")?,
        targets: raw
            .targets
            .into_iter()
            .map(|t| (t.architecture, t.machines))
            .collect(),
        features: raw.features.into_iter().collect(),
    })
}

/// The descriptor files in effect, by priority: `*.json` of each directory, a later
/// directory's file replacing an earlier one's of the same name, empty files masking.
/// Blocking: run off the async runtime.
pub fn descriptor_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<std::ffi::OsString, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json") {
                by_name.insert(e.file_name(), path);
            }
        }
    }
    by_name
        .into_values()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect()
}

/// Loads every descriptor in effect, with the reason for each one that cannot be used.
/// Blocking: run off the async runtime.
pub fn load(dirs: &[PathBuf]) -> Vec<Result<Descriptor, (PathBuf, String)>> {
    descriptor_files(dirs)
        .into_iter()
        .map(|p| {
            let text = read_bounded(&p).map_err(|e| (p.clone(), e))?;
            parse(&p, &text).map_err(|e| (p, e))
        })
        .collect()
}

fn read_bounded(p: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(p).map_err(|e| e.to_string())?;
    let mut text = String::new();
    f.take(MAX_DESCRIPTOR + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_DESCRIPTOR {
        return Err(format!("over {MAX_DESCRIPTOR} bytes"));
    }
    Ok(text)
}

/// Why `d` does not fit `want`, or `None` when it does.
pub fn mismatch(d: &Descriptor, want: &Wanted<'_>) -> Option<String> {
    let target = d.targets.iter().any(|(arch, machines)| {
        arch == want.arch
            && machines
                .iter()
                .any(|g| crate::glob::glob_match(g, want.machine))
    });
    if !target {
        return Some(format!("not for {} {}", want.arch, want.machine));
    }
    for (name, wanted) in [
        ("secure-boot", want.secure_boot),
        ("enrolled-keys", want.enrolled_keys),
    ] {
        match wanted {
            Some(w) if w != d.has(name) => {
                return Some(format!("{} {name}", if w { "lacks" } else { "has" }))
            }
            _ => {}
        }
    }
    if want.smm == Some(false) && d.has("requires-smm") {
        return Some(format!("requires SMM, which {}", want.smm_off));
    }
    None
}

/// The first descriptor (by priority) that fits, or every reason none did.
pub fn select<'a>(
    loaded: &'a [Result<Descriptor, (PathBuf, String)>],
    want: &Wanted<'_>,
) -> Result<&'a Descriptor, String> {
    let mut why = Vec::new();
    for d in loaded {
        match d {
            Ok(d) => match mismatch(d, want) {
                None => return Ok(d),
                Some(reason) => why.push(format!("{}: {reason}", d.file.display())),
            },
            Err((p, reason)) => why.push(format!("{}: {reason}", p.display())),
        }
    }
    if why.is_empty() {
        why.push("no firmware descriptors (install ovmf)".into());
    }
    Err(format!(
        "no UEFI firmware for {} {}{}{}: {}",
        want.arch,
        want.machine,
        pref(" secure-boot", want.secure_boot),
        pref(" enrolled-keys", want.enrolled_keys),
        why.join("; ")
    ))
}

fn pref(name: &str, v: Option<bool>) -> String {
    match v {
        Some(v) => format!("{name}={}", if v { "yes" } else { "no" }),
        None => String::new(),
    }
}

/// Copies `template` to `nvram` unless `nvram` exists: through a temporary file in the same
/// directory, synced, renamed into place and the directory synced, so a crash leaves either
/// no store or a whole one. Mode 0600: only the daemon opens it (QEMU gets a descriptor).
/// Returns whether a copy was made. Blocking: run off the async runtime.
pub fn ensure_nvram(template: &Path, nvram: &Path) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if nvram.exists() {
        return Ok(false);
    }
    let dir = nvram
        .parent()
        .ok_or_else(|| std::io::Error::other("NVRAM path has no directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let data = std::fs::read(template)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", template.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        nvram.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, nvram)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPLIT: &str = r#"{
        "description": "test firmware",
        "interface-types": ["uefi"],
        "mapping": {"device": "flash",
            "executable": {"filename": "/fw/CODE.fd", "format": "raw"},
            "nvram-template": {"filename": "/fw/VARS.fd", "format": "raw"}},
        "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
        "features": ["acpi-s3", "FEATURES"]
    }"#;

    fn want(machine: &str) -> Wanted<'_> {
        Wanted {
            arch: "x86_64",
            machine,
            ..Wanted::default()
        }
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    /// The descriptors the ovmf package installs on this machine (Debian bookworm): the
    /// secure, MS-enrolled one wins for q35 without preferences (as libvirt picks), the plain
    /// one when secure boot is off, and only the plain one fits i440fx.
    #[test]
    fn real_descriptors_on_this_machine() {
        let dirs: Vec<PathBuf> = DESCRIPTOR_DIRS.iter().map(PathBuf::from).collect();
        let loaded = load(&dirs);
        assert!(
            !loaded.is_empty(),
            "no firmware descriptors: quickstart.sh installs ovmf"
        );
        for d in &loaded {
            let d = d.as_ref().expect("every installed descriptor parses");
            assert!(d.executable.exists(), "{}", d.executable.display());
            assert!(d.nvram_template.exists(), "{}", d.nvram_template.display());
        }
        let q35 = select(&loaded, &want("pc-q35-7.2")).unwrap();
        assert!(q35.has("secure-boot") && q35.has("enrolled-keys") && q35.has("requires-smm"));
        let plain = select(
            &loaded,
            &Wanted {
                secure_boot: Some(false),
                ..want("pc-q35-7.2")
            },
        )
        .unwrap();
        assert!(!plain.has("secure-boot") && !plain.has("requires-smm"));
        let unenrolled = select(
            &loaded,
            &Wanted {
                secure_boot: Some(true),
                enrolled_keys: Some(false),
                ..want("pc-q35-7.2")
            },
        )
        .unwrap();
        assert!(unenrolled.has("secure-boot") && !unenrolled.has("enrolled-keys"));
        // SMM off rules out every secure-boot build.
        let no_smm = select(
            &loaded,
            &Wanted {
                smm: Some(false),
                ..want("pc-q35-7.2")
            },
        )
        .unwrap();
        assert_eq!(no_smm, plain);
        let e = select(
            &loaded,
            &Wanted {
                smm: Some(false),
                smm_off: "this host's KVM lacks",
                secure_boot: Some(true),
                ..want("pc-q35-7.2")
            },
        )
        .unwrap_err();
        assert!(
            e.contains("requires SMM, which this host's KVM lacks"),
            "{e}"
        );
        let pc = select(&loaded, &want("pc-i440fx-7.2")).unwrap();
        assert_eq!(pc, plain);
        let e = select(&loaded, &want("microvm")).unwrap_err();
        assert!(e.contains("no UEFI firmware for x86_64 microvm"), "{e}");
    }

    #[test]
    fn etc_overrides_and_masks_by_file_name_and_priority_is_the_name() {
        let t = tempfile::tempdir().unwrap();
        let (usr, etc) = (t.path().join("usr"), t.path().join("etc"));
        write(&usr, "50-a.json", &SPLIT.replace("FEATURES", "from-usr"));
        write(&usr, "60-b.json", &SPLIT.replace("FEATURES", "b"));
        write(&usr, "70-c.json", &SPLIT.replace("FEATURES", "c"));
        write(&usr, "README", "not json");
        write(&etc, "50-a.json", &SPLIT.replace("FEATURES", "from-etc"));
        write(&etc, "60-b.json", "");
        write(&etc, "10-z.json", &SPLIT.replace("pc-q35-*", "pc-i440fx-*"));
        let loaded = load(&[usr, etc.clone()]);
        let files: Vec<String> = loaded
            .iter()
            .map(|d| {
                let d = d.as_ref().unwrap();
                format!(
                    "{}:{}",
                    d.file.strip_prefix(t.path()).unwrap().display(),
                    d.features.iter().last().unwrap()
                )
            })
            .collect();
        assert_eq!(
            files,
            [
                "etc/10-z.json:acpi-s3",
                "etc/50-a.json:from-etc",
                "usr/70-c.json:c"
            ]
        );
        // 10-z is first by name but for i440fx only: q35 gets 50-a from /etc.
        let d = select(&loaded, &want("pc-q35-7.2")).unwrap();
        assert_eq!(d.file, etc.join("50-a.json"));
    }

    #[test]
    fn unusable_descriptors_are_skipped_with_their_reason() {
        let bad = [
            ("bios", SPLIT.replace("\"uefi\"", "\"bios\""), "not uefi"),
            (
                "memory",
                SPLIT.replace("\"device\": \"flash\"", "\"device\": \"memory\""),
                "device 'memory'",
            ),
            (
                "stateless",
                SPLIT.replace(
                    "\"device\": \"flash\",",
                    "\"device\": \"flash\", \"mode\": \"stateless\",",
                ),
                "flash mode 'stateless'",
            ),
            (
                "qcow2",
                SPLIT.replace("\"format\": \"raw\"}", "\"format\": \"qcow2\"}"),
                "format 'qcow2'",
            ),
            ("garbage", "{\"mapping\": 3".to_owned(), "not a descriptor"),
        ];
        for (name, text, reason) in &bad {
            let e = parse(Path::new(name), text).unwrap_err();
            assert!(e.contains(reason), "{name}: {e}");
        }
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "50-bios.json", &bad[0].1);
        let loaded = load(&[t.path().to_path_buf()]);
        let e = select(&loaded, &want("pc-q35-7.2")).unwrap_err();
        assert!(e.contains("50-bios.json: interface types"), "{e}");
        let e = select(&[], &want("pc-q35-7.2")).unwrap_err();
        assert!(e.contains("install ovmf"), "{e}");
    }

    #[test]
    fn nvram_is_copied_once_and_atomically() {
        let t = tempfile::tempdir().unwrap();
        let template = t.path().join("VARS.fd");
        std::fs::write(&template, b"pristine").unwrap();
        let nvram = t.path().join("nvram/g.fd");
        assert!(ensure_nvram(&template, &nvram).unwrap());
        assert_eq!(std::fs::read(&nvram).unwrap(), b"pristine");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&nvram).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The guest's variables are kept across starts.
        std::fs::write(&nvram, b"guest wrote").unwrap();
        assert!(!ensure_nvram(&template, &nvram).unwrap());
        assert_eq!(std::fs::read(&nvram).unwrap(), b"guest wrote");
        // No temporary file is left behind, even when the template is missing.
        let e = ensure_nvram(&t.path().join("none"), &t.path().join("nvram/h.fd")).unwrap_err();
        assert!(e.to_string().contains("none"), "{e}");
        let names: Vec<_> = std::fs::read_dir(t.path().join("nvram"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["g.fd"]);
    }

    #[test]
    fn machine_globs() {
        assert!(crate::glob::glob_match("pc-q35-*", "pc-q35-7.2"));
        assert!(!crate::glob::glob_match("pc-q35-*", "pc-i440fx-7.2"));
        assert!(crate::glob::glob_match("pc-i440fx-?.?", "pc-i440fx-7.2"));
        assert!(!crate::glob::glob_match("pc-q35-*", "q35"));
    }
}
