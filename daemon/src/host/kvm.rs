//! KVM capabilities through `/dev/kvm` (kvm-ioctls): API version, vCPU limits, the extensions
//! that matter to placement and migration, and the CPUID KVM can offer guests.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::HostError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvmCaps {
    /// `KVM_GET_API_VERSION`; 12 on every kernel since 2.6.22.
    pub api_version: i32,
    /// `KVM_CAP_MAX_VCPUS`: the hard limit per VM.
    pub max_vcpus: u32,
    /// `KVM_CAP_NR_VCPUS`: the recommended limit (the host's CPU count).
    pub recommended_vcpus: u32,
    /// `KVM_CHECK_EXTENSION` on the system fd for each of [`EXTENSIONS`]: 0 absent, 1 present,
    /// or the value the capability reports (a count, a bitmask).
    pub extensions: BTreeMap<&'static str, i32>,
    /// `KVM_GET_SUPPORTED_CPUID`, summarized; `None` off x86.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuid: Option<CpuidSummary>,
}

impl KvmCaps {
    pub fn has(&self, cap: &str) -> bool {
        self.extensions.get(cap).is_some_and(|v| *v > 0)
    }
}

/// The extensions probed, and why each matters to placement or migration.
pub const EXTENSIONS: &[(&str, u32)] = &[
    // vCPU sizing.
    ("KVM_CAP_NR_VCPUS", kvm_bindings::KVM_CAP_NR_VCPUS),
    ("KVM_CAP_MAX_VCPUS", kvm_bindings::KVM_CAP_MAX_VCPUS),
    ("KVM_CAP_MAX_VCPU_ID", kvm_bindings::KVM_CAP_MAX_VCPU_ID),
    // Interrupt controller in the kernel (QEMU's default for q35: split irqchip).
    ("KVM_CAP_IRQCHIP", kvm_bindings::KVM_CAP_IRQCHIP),
    ("KVM_CAP_SPLIT_IRQCHIP", kvm_bindings::KVM_CAP_SPLIT_IRQCHIP),
    ("KVM_CAP_IRQFD", kvm_bindings::KVM_CAP_IRQFD),
    ("KVM_CAP_IOEVENTFD", kvm_bindings::KVM_CAP_IOEVENTFD),
    // Memory: slots bound hotplug and vhost regions.
    ("KVM_CAP_USER_MEMORY", kvm_bindings::KVM_CAP_USER_MEMORY),
    ("KVM_CAP_NR_MEMSLOTS", kvm_bindings::KVM_CAP_NR_MEMSLOTS),
    ("KVM_CAP_SET_TSS_ADDR", kvm_bindings::KVM_CAP_SET_TSS_ADDR),
    // CPU model / CPUID.
    ("KVM_CAP_EXT_CPUID", kvm_bindings::KVM_CAP_EXT_CPUID),
    ("KVM_CAP_X2APIC_API", kvm_bindings::KVM_CAP_X2APIC_API),
    ("KVM_CAP_XSAVE", kvm_bindings::KVM_CAP_XSAVE),
    ("KVM_CAP_XCRS", kvm_bindings::KVM_CAP_XCRS),
    // System Management Mode: what secure-boot firmware runs its variable store in.
    ("KVM_CAP_X86_SMM", kvm_bindings::KVM_CAP_X86_SMM),
    // Timekeeping across migration.
    ("KVM_CAP_TSC_CONTROL", kvm_bindings::KVM_CAP_TSC_CONTROL),
    ("KVM_CAP_GET_TSC_KHZ", kvm_bindings::KVM_CAP_GET_TSC_KHZ),
    (
        "KVM_CAP_TSC_DEADLINE_TIMER",
        kvm_bindings::KVM_CAP_TSC_DEADLINE_TIMER,
    ),
    ("KVM_CAP_ADJUST_CLOCK", kvm_bindings::KVM_CAP_ADJUST_CLOCK),
    ("KVM_CAP_KVMCLOCK_CTRL", kvm_bindings::KVM_CAP_KVMCLOCK_CTRL),
    // State transfer.
    ("KVM_CAP_VCPU_EVENTS", kvm_bindings::KVM_CAP_VCPU_EVENTS),
    ("KVM_CAP_DEBUGREGS", kvm_bindings::KVM_CAP_DEBUGREGS),
    ("KVM_CAP_MCE", kvm_bindings::KVM_CAP_MCE),
    ("KVM_CAP_NESTED_STATE", kvm_bindings::KVM_CAP_NESTED_STATE),
    (
        "KVM_CAP_EXCEPTION_PAYLOAD",
        kvm_bindings::KVM_CAP_EXCEPTION_PAYLOAD,
    ),
    // Dirty tracking for live migration.
    (
        "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2",
        kvm_bindings::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
    ),
    (
        "KVM_CAP_DIRTY_LOG_RING",
        kvm_bindings::KVM_CAP_DIRTY_LOG_RING,
    ),
    // Run loop.
    (
        "KVM_CAP_IMMEDIATE_EXIT",
        kvm_bindings::KVM_CAP_IMMEDIATE_EXIT,
    ),
];

/// What `KVM_GET_SUPPORTED_CPUID` says KVM can expose to a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuidSummary {
    /// Leaf 0: `GenuineIntel`, `AuthenticAMD`...
    pub vendor: String,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    /// Highest basic leaf.
    pub max_leaf: u32,
    /// Number of CPUID entries returned.
    pub entries: usize,
    /// Decoded feature flags (QEMU's names), sorted.
    pub features: Vec<&'static str>,
}

/// One CPUID entry (the subset of `kvm_cpuid_entry2` decoding needs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

#[derive(Clone, Copy)]
enum Reg {
    Ebx,
    Ecx,
    Edx,
}

/// (leaf, subleaf, register, bit, QEMU feature name).
const FEATURES: &[(u32, u32, Reg, u32, &str)] = &[
    (1, 0, Reg::Edx, 0, "fpu"),
    (1, 0, Reg::Edx, 4, "tsc"),
    (1, 0, Reg::Edx, 5, "msr"),
    (1, 0, Reg::Edx, 6, "pae"),
    (1, 0, Reg::Edx, 8, "cx8"),
    (1, 0, Reg::Edx, 9, "apic"),
    (1, 0, Reg::Edx, 15, "cmov"),
    (1, 0, Reg::Edx, 19, "clflush"),
    (1, 0, Reg::Edx, 23, "mmx"),
    (1, 0, Reg::Edx, 25, "sse"),
    (1, 0, Reg::Edx, 26, "sse2"),
    (1, 0, Reg::Edx, 28, "ht"),
    (1, 0, Reg::Ecx, 0, "pni"),
    (1, 0, Reg::Ecx, 1, "pclmulqdq"),
    (1, 0, Reg::Ecx, 5, "vmx"),
    (1, 0, Reg::Ecx, 9, "ssse3"),
    (1, 0, Reg::Ecx, 12, "fma"),
    (1, 0, Reg::Ecx, 13, "cx16"),
    (1, 0, Reg::Ecx, 17, "pcid"),
    (1, 0, Reg::Ecx, 19, "sse4.1"),
    (1, 0, Reg::Ecx, 20, "sse4.2"),
    (1, 0, Reg::Ecx, 21, "x2apic"),
    (1, 0, Reg::Ecx, 22, "movbe"),
    (1, 0, Reg::Ecx, 23, "popcnt"),
    (1, 0, Reg::Ecx, 24, "tsc-deadline"),
    (1, 0, Reg::Ecx, 25, "aes"),
    (1, 0, Reg::Ecx, 26, "xsave"),
    (1, 0, Reg::Ecx, 28, "avx"),
    (1, 0, Reg::Ecx, 29, "f16c"),
    (1, 0, Reg::Ecx, 30, "rdrand"),
    (1, 0, Reg::Ecx, 31, "hypervisor"),
    (7, 0, Reg::Ebx, 0, "fsgsbase"),
    (7, 0, Reg::Ebx, 3, "bmi1"),
    (7, 0, Reg::Ebx, 4, "hle"),
    (7, 0, Reg::Ebx, 5, "avx2"),
    (7, 0, Reg::Ebx, 7, "smep"),
    (7, 0, Reg::Ebx, 8, "bmi2"),
    (7, 0, Reg::Ebx, 9, "erms"),
    (7, 0, Reg::Ebx, 10, "invpcid"),
    (7, 0, Reg::Ebx, 11, "rtm"),
    (7, 0, Reg::Ebx, 16, "avx512f"),
    (7, 0, Reg::Ebx, 17, "avx512dq"),
    (7, 0, Reg::Ebx, 18, "rdseed"),
    (7, 0, Reg::Ebx, 19, "adx"),
    (7, 0, Reg::Ebx, 20, "smap"),
    (7, 0, Reg::Ebx, 23, "clflushopt"),
    (7, 0, Reg::Ebx, 24, "clwb"),
    (7, 0, Reg::Ebx, 28, "avx512cd"),
    (7, 0, Reg::Ebx, 29, "sha-ni"),
    (7, 0, Reg::Ebx, 30, "avx512bw"),
    (7, 0, Reg::Ebx, 31, "avx512vl"),
    (7, 0, Reg::Ecx, 2, "umip"),
    (7, 0, Reg::Ecx, 3, "pku"),
    (7, 0, Reg::Ecx, 9, "vaes"),
    (7, 0, Reg::Ecx, 10, "vpclmulqdq"),
    (7, 0, Reg::Ecx, 11, "avx512vnni"),
    (7, 0, Reg::Ecx, 16, "la57"),
    (7, 0, Reg::Ecx, 22, "rdpid"),
    (7, 0, Reg::Edx, 10, "md-clear"),
    (7, 0, Reg::Edx, 26, "spec-ctrl"),
    (7, 0, Reg::Edx, 27, "stibp"),
    (7, 0, Reg::Edx, 29, "arch-capabilities"),
    (7, 0, Reg::Edx, 31, "ssbd"),
    (0x8000_0001, 0, Reg::Ecx, 0, "lahf-lm"),
    (0x8000_0001, 0, Reg::Ecx, 2, "svm"),
    (0x8000_0001, 0, Reg::Ecx, 5, "abm"),
    (0x8000_0001, 0, Reg::Ecx, 6, "sse4a"),
    (0x8000_0001, 0, Reg::Edx, 20, "nx"),
    (0x8000_0001, 0, Reg::Edx, 26, "pdpe1gb"),
    (0x8000_0001, 0, Reg::Edx, 27, "rdtscp"),
    (0x8000_0001, 0, Reg::Edx, 29, "lm"),
];

/// Decodes vendor, family/model/stepping and common feature flags from CPUID entries.
pub fn summarize_cpuid(entries: &[CpuidEntry]) -> CpuidSummary {
    let leaf = |f: u32, i: u32| {
        entries
            .iter()
            .find(|e| e.function == f && e.index == i)
            .or_else(|| entries.iter().find(|e| e.function == f))
    };
    let (vendor, max_leaf) = leaf(0, 0).map_or((String::new(), 0), |e| {
        let bytes: Vec<u8> = [e.ebx, e.edx, e.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        (
            String::from_utf8_lossy(&bytes)
                .trim_end_matches('\0')
                .to_owned(),
            e.eax,
        )
    });
    let eax1 = leaf(1, 0).map_or(0, |e| e.eax);
    let base_family = (eax1 >> 8) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((eax1 >> 20) & 0xff)
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xf {
        ((eax1 >> 4) & 0xf) | (((eax1 >> 16) & 0xf) << 4)
    } else {
        (eax1 >> 4) & 0xf
    };
    let mut features: Vec<&'static str> = FEATURES
        .iter()
        .filter(|(f, i, reg, bit, _)| {
            leaf(*f, *i).is_some_and(|e| {
                let v = match reg {
                    Reg::Ebx => e.ebx,
                    Reg::Ecx => e.ecx,
                    Reg::Edx => e.edx,
                };
                v & (1 << bit) != 0
            })
        })
        .map(|(.., name)| *name)
        .collect();
    features.sort_unstable();
    CpuidSummary {
        vendor,
        family,
        model,
        stepping: eax1 & 0xf,
        max_leaf,
        entries: entries.len(),
        features,
    }
}

/// Opens `dev` (normally `/dev/kvm`) and reads its capabilities. Blocking (a few ioctls).
pub fn probe(dev: &Path) -> Result<KvmCaps, HostError> {
    let path = dev.to_path_buf();
    let open_err = |source| HostError::KvmOpen {
        path: path.clone(),
        source,
    };
    let c_path = CString::new(dev.as_os_str().as_bytes()).map_err(|_| {
        open_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "path contains a NUL byte",
        ))
    })?;
    let kvm = kvm_ioctls::Kvm::new_with_path(&c_path).map_err(|e| open_err(errno_io(&e)))?;
    let api_version = kvm.get_api_version();
    if api_version != kvm_bindings::KVM_API_VERSION as i32 {
        return Err(HostError::KvmApi {
            path,
            found: api_version,
        });
    }
    let extensions = EXTENSIONS
        .iter()
        .map(|(name, cap)| (*name, kvm.check_extension_raw((*cap).into())))
        .collect();
    Ok(KvmCaps {
        api_version,
        max_vcpus: u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX),
        recommended_vcpus: u32::try_from(kvm.get_nr_vcpus()).unwrap_or(u32::MAX),
        extensions,
        cpuid: supported_cpuid(&kvm, &path)?,
    })
}

#[cfg(target_arch = "x86_64")]
fn supported_cpuid(kvm: &kvm_ioctls::Kvm, path: &Path) -> Result<Option<CpuidSummary>, HostError> {
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| HostError::KvmIoctl {
            path: path.to_path_buf(),
            ioctl: "KVM_GET_SUPPORTED_CPUID",
            source: errno_io(&e),
        })?;
    let entries: Vec<CpuidEntry> = cpuid
        .as_slice()
        .iter()
        .map(|e| CpuidEntry {
            function: e.function,
            index: e.index,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        })
        .collect();
    Ok(Some(summarize_cpuid(&entries)))
}

#[cfg(not(target_arch = "x86_64"))]
fn supported_cpuid(
    _kvm: &kvm_ioctls::Kvm,
    _path: &Path,
) -> Result<Option<CpuidSummary>, HostError> {
    Ok(None)
}

fn errno_io(e: &kvm_ioctls::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno())
}

/// [`probe`] off the async runtime.
pub async fn probe_async(dev: PathBuf) -> Result<KvmCaps, HostError> {
    tokio::task::spawn_blocking(move || probe(&dev))
        .await
        .map_err(|e| HostError::Join(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(s: &[u8; 12]) -> (u32, u32, u32) {
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        (w(0), w(4), w(8))
    }

    #[test]
    fn decodes_vendor_family_model_and_flags() {
        let (b, d, c) = regs(b"GenuineIntel");
        let entries = [
            CpuidEntry {
                function: 0,
                eax: 0x16,
                ebx: b,
                edx: d,
                ecx: c,
                ..Default::default()
            },
            // Skylake-SP: family 6, model 0x55, stepping 4.
            CpuidEntry {
                function: 1,
                eax: 0x0005_0654,
                ecx: (1 << 28) | (1 << 20) | (1 << 31),
                edx: (1 << 26) | 1,
                ..Default::default()
            },
            CpuidEntry {
                function: 7,
                ebx: (1 << 5) | (1 << 16),
                ..Default::default()
            },
            CpuidEntry {
                function: 0x8000_0001,
                edx: 1 << 26,
                ..Default::default()
            },
        ];
        let s = summarize_cpuid(&entries);
        assert_eq!(s.vendor, "GenuineIntel");
        assert_eq!((s.family, s.model, s.stepping), (6, 0x55, 4));
        assert_eq!(s.max_leaf, 0x16);
        assert_eq!(
            s.features,
            [
                "avx",
                "avx2",
                "avx512f",
                "fpu",
                "hypervisor",
                "pdpe1gb",
                "sse2",
                "sse4.2"
            ]
        );
    }

    #[test]
    fn amd_extended_family() {
        let (b, d, c) = regs(b"AuthenticAMD");
        let entries = [
            CpuidEntry {
                function: 0,
                ebx: b,
                edx: d,
                ecx: c,
                ..Default::default()
            },
            // Zen 3: base family 0xf + ext 0xa = 0x19, model 0x01.
            CpuidEntry {
                function: 1,
                eax: 0x00a0_0f11,
                ..Default::default()
            },
        ];
        let s = summarize_cpuid(&entries);
        assert_eq!(s.vendor, "AuthenticAMD");
        assert_eq!((s.family, s.model, s.stepping), (0x19, 0x01, 1));
        assert!(s.features.is_empty());
    }

    #[test]
    fn empty_cpuid_is_not_a_panic() {
        let s = summarize_cpuid(&[]);
        assert_eq!(s.vendor, "");
        assert_eq!(s.entries, 0);
    }

    #[test]
    fn missing_device_is_named() {
        let err = probe(Path::new("/nonexistent/kvm")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kvm"), "{err}");
    }
}
