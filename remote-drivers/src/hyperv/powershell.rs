//! The PowerShell the adapter runs on the Hyper-V host, and how its errors come back.
//!
//! Every script is built here from fixed lines plus quoted values, so the set of shapes sent is
//! small and known (the test peer interprets them with a PowerShell subset and refuses
//! anything outside it). Values are single-quoted with
//! PowerShell's rules (all four single-quote characters doubled); names are matched literally
//! (`[WildcardPattern]::Escape`), ids must be GUIDs.
//!
//! Scripts run as `powershell.exe -NoProfile -NonInteractive -EncodedCommand <base64 UTF-16LE>`;
//! errors arrive as CLIXML on stderr (`#< CLIXML`, `<S S="Error">` lines with `_x000D__x000A_`
//! escapes), from which the message, CategoryInfo and FullyQualifiedErrorId are recovered.

use base64::Engine as _;
use novacron_domain::ErrorCode;

use super::xml::{local, walk, Item as Node};

/// Exit code of a script that found several VMs by one name (its stdout lists them).
pub const EXIT_AMBIGUOUS: i64 = 3;

const PROLOGUE: &str =
    "$ErrorActionPreference = 'Stop'\n$ProgressPreference = 'SilentlyContinue'\n";
/// The VM properties read back; `Id` as a string so every PowerShell version prints it alike.
const FIELDS: &str = "Select-Object Name, @{n='Id';e={$_.Id.ToString()}}, State, ProcessorCount, MemoryStartup, Generation";

/// How a script addresses one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Name(String),
    /// A VM's GUID (the `id:<guid>` form of a domain name).
    Id(String),
}

impl Target {
    /// `id:<guid>` addresses a VM by id; anything else is a name.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.chars().any(char::is_control) {
            return Err(format!("domain name {name:?} contains control characters"));
        }
        match name.strip_prefix("id:") {
            Some(id) => {
                let ok = id.len() == 36
                    && id.char_indices().all(|(i, c)| match i {
                        8 | 13 | 18 | 23 => c == '-',
                        _ => c.is_ascii_hexdigit(),
                    });
                if ok {
                    Ok(Self::Id(id.to_ascii_lowercase()))
                } else {
                    Err(format!("'{name}': an id must be a VM GUID (id:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"))
                }
            }
            None if name.is_empty() => Err("empty domain name".into()),
            None => Ok(Self::Name(name.to_owned())),
        }
    }

    fn select(&self) -> String {
        match self {
            Self::Name(n) => format!(
                "$vm = @(Get-VM -Name ([WildcardPattern]::Escape({})))",
                quote(n)
            ),
            Self::Id(id) => format!("$vm = @(Get-VM -Id {})", quote(id)),
        }
    }
}

/// A PowerShell single-quoted string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn emit(expr: &str) -> String {
    format!("ConvertTo-Json -Compress -Depth 2 -InputObject @({expr} | {FIELDS})")
}

/// Lifecycle actions, one cmdlet line each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    /// Graceful: the guest's shutdown integration service (Stop-VM waits for it).
    Shutdown,
    /// Power off at once.
    TurnOff,
    /// Pause (VM keeps its memory) → Paused.
    Suspend,
    /// Paused → Running with Resume-VM, Saved → Running with Start-VM.
    Resume,
    /// Save memory to disk → Saved.
    Save,
    /// Hard reset.
    Reboot,
    Remove,
}

impl Action {
    fn line(self) -> &'static str {
        match self {
            Self::Start => "Start-VM -VM $vm[0]",
            Self::Shutdown => "Stop-VM -VM $vm[0] -Force",
            Self::TurnOff => "Stop-VM -VM $vm[0] -TurnOff -Force",
            Self::Suspend => "Suspend-VM -VM $vm[0]",
            Self::Resume => {
                "if ($vm[0].State -eq 'Saved') { Start-VM -VM $vm[0] } else { Resume-VM -VM $vm[0] }"
            }
            Self::Save => "Save-VM -VM $vm[0]",
            Self::Reboot => "Restart-VM -VM $vm[0] -Force",
            // Remove-VM would delete a running VM; our undefine never does, so the script
            // refuses with Hyper-V's own wording for a wrong state.
            Self::Remove => concat!(
                "if ($vm[0].State -ne 'Off') { Write-Error -Message (\"Cannot remove '\" + $vm[0].Name + \"' while it is \" + $vm[0].State + '; turn it off first.') -Category InvalidOperation -ErrorId InvalidState }\n",
                "Remove-VM -VM $vm[0] -Force"
            ),
        }
    }
}

pub fn list() -> String {
    format!("{PROLOGUE}{}", emit("Get-VM"))
}

pub fn get(target: &Target) -> String {
    format!("{PROLOGUE}{}\n{}", target.select(), emit("$vm"))
}

fn ambiguity_guard() -> String {
    format!(
        "if ($vm.Count -ne 1) {{ {}; exit {EXIT_AMBIGUOUS} }}",
        emit("$vm")
    )
}

/// `action` on the one VM `target` names; prints the VM afterwards (`[]` once removed).
pub fn action(target: &Target, action: Action) -> String {
    let after = match action {
        Action::Remove => "ConvertTo-Json -Compress -InputObject @()".to_owned(),
        _ => emit("(Get-VM -Id $vm[0].Id)"),
    };
    format!(
        "{PROLOGUE}{}\n{}\n{}\n{after}",
        target.select(),
        ambiguity_guard(),
        action.line()
    )
}

/// What `define` maps onto Hyper-V.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    pub memory_bytes: u64,
    pub generation: u8,
    pub processors: u32,
}

/// Creates the VM, or updates memory and processors of the existing one (Hyper-V refuses both
/// while it runs); prints it.
pub fn define(spec: &VmSpec) -> String {
    let name = quote(&spec.name);
    format!(
        concat!(
            "{prologue}$vm = @(Get-VM -Name ([WildcardPattern]::Escape({name})) -ErrorAction SilentlyContinue)\n",
            "if ($vm.Count -gt 1) {{ {listing}; exit {ambiguous} }}\n",
            "if ($vm.Count -eq 0) {{ $vm = @(New-VM -Name {name} -Generation {generation} -MemoryStartupBytes {memory} -NoVHD) }}\n",
            "elseif ($vm[0].Generation -ne {generation}) {{ Write-Error -Message ({name} + ' is a generation ' + $vm[0].Generation + ' virtual machine; its generation cannot change.') -Category InvalidArgument -ErrorId GenerationMismatch }}\n",
            "Set-VMMemory -VM $vm[0] -StartupBytes {memory}\n",
            "Set-VMProcessor -VM $vm[0] -Count {processors}\n",
            "{after}"
        ),
        prologue = PROLOGUE,
        name = name,
        listing = emit("$vm"),
        ambiguous = EXIT_AMBIGUOUS,
        generation = spec.generation,
        memory = spec.memory_bytes,
        processors = spec.processors,
        after = emit("(Get-VM -Id $vm[0].Id)"),
    )
}

/// Host facts for `capabilities`.
pub fn host_info() -> String {
    format!(
        "{PROLOGUE}$h = Get-VMHost\nConvertTo-Json -Compress -InputObject @{{ ComputerName = $h.ComputerName; LogicalProcessorCount = $h.LogicalProcessorCount; MemoryCapacity = $h.MemoryCapacity; OsVersion = [Environment]::OSVersion.Version.ToString(); PSVersion = $PSVersionTable.PSVersion.ToString() }}"
    )
}

/// The `powershell.exe` arguments running `script`.
pub fn arguments(script: &str) -> String {
    let utf16: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    format!(
        "-NoProfile -NonInteractive -EncodedCommand {}",
        base64::engine::general_purpose::STANDARD.encode(utf16)
    )
}

/// A PowerShell error record as the default error view prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsError {
    /// The message, without the `Cmdlet : ` prefix and the position lines.
    pub message: String,
    /// CategoryInfo's category (`InvalidOperation`, `ObjectNotFound`...).
    pub category: Option<String>,
    /// The exception type (`VirtualizationException`...).
    pub exception: Option<String>,
    /// FullyQualifiedErrorId (`InvalidState,Microsoft.HyperV.PowerShell.Commands.StartVM`).
    pub error_id: Option<String>,
}

impl std::fmt::Display for PsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.fault(), self.text())
    }
}

impl PsError {
    /// The vendor's fault name: the exception type, else the category.
    pub fn fault(&self) -> String {
        self.exception
            .clone()
            .or_else(|| self.category.clone())
            .unwrap_or_else(|| "PowerShellError".into())
    }

    /// The message with the error id, which names the failing cmdlet.
    pub fn text(&self) -> String {
        match &self.error_id {
            Some(id) => format!("{} [{id}]", self.message),
            None => self.message.clone(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        let text = self.message.to_ascii_lowercase();
        let id = self.error_id.as_deref().unwrap_or("").to_ascii_lowercase();
        let category = self.category.as_deref().unwrap_or("");
        if category == "ObjectNotFound"
            || [
                "unable to find",
                "cannot be found",
                "could not be found",
                "was not found",
            ]
            .iter()
            .any(|p| text.contains(p))
        {
            ErrorCode::NotFound
        } else if id.starts_with("invalidstate")
            || text.contains("in its current state")
            || text.contains("in the current state")
        {
            ErrorCode::WrongState
        } else if category == "ResourceExists" {
            ErrorCode::AlreadyExists
        } else if category == "InvalidArgument" || id.starts_with("generationmismatch") {
            ErrorCode::InvalidConfig
        } else {
            ErrorCode::Remote
        }
    }
}

/// Decodes CLIXML's `_xHHHH_` escapes (`_x000D__x000A_` is CR LF).
pub fn decode_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("_x") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let hex = tail.get(2..6);
        let closed = tail.get(6..7) == Some("_");
        match hex.and_then(|h| u32::from_str_radix(h, 16).ok()) {
            Some(v) if closed && hex.is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())) => {
                out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                rest = &tail[7..];
            }
            _ => {
                out.push_str("_x");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The error record on a script's stderr: CLIXML when PowerShell wrote it, else plain text.
pub fn parse_stderr(stderr: &[u8]) -> Option<PsError> {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return None;
    }
    let lines = match text.strip_prefix("#< CLIXML") {
        Some(xml) => {
            let mut errors = String::new();
            let mut in_error = false;
            let parsed = walk(xml.trim(), |node| match node {
                Node::Open { path, attrs } => {
                    in_error = path.last().is_some_and(|n| n == "S")
                        && attrs
                            .iter()
                            .any(|(k, v)| local(k) == "S" && v.eq_ignore_ascii_case("Error"));
                }
                Node::Text { path, text } => {
                    if in_error && path.last().is_some_and(|n| n == "S") {
                        errors.push_str(text);
                    }
                }
                Node::Close { .. } => {}
            });
            if parsed.is_err() {
                return Some(PsError {
                    message: format!("unreadable CLIXML error output: {}", excerpt(xml)),
                    category: None,
                    exception: None,
                    error_id: None,
                });
            }
            if errors.trim().is_empty() {
                // Only progress or warning records: no error.
                return None;
            }
            decode_escapes(&errors)
        }
        None => text.to_owned(),
    };
    Some(parse_error_view(&lines))
}

fn excerpt(s: &str) -> String {
    s.chars().take(300).collect()
}

/// Splits the default error view into message, CategoryInfo and FullyQualifiedErrorId.
fn parse_error_view(text: &str) -> PsError {
    let mut message = Vec::new();
    let mut category = None;
    let mut exception = None;
    let mut error_id = None;
    let mut in_message = true;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("+ CategoryInfo") {
            in_message = false;
            let info = info.trim_start().trim_start_matches(':').trim();
            category = info
                .split(':')
                .next()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            exception = info
                .rsplit_once(", ")
                .map(|(_, e)| e.trim().to_owned())
                .filter(|e| !e.is_empty());
        } else if let Some(id) = trimmed.strip_prefix("+ FullyQualifiedErrorId") {
            in_message = false;
            error_id = Some(id.trim_start().trim_start_matches(':').trim().to_owned())
                .filter(|e| !e.is_empty());
        } else if trimmed.starts_with("At line:")
            || trimmed.starts_with("At ") && trimmed.contains(" char:")
            || trimmed.starts_with('+')
        {
            in_message = false;
        } else if in_message && !trimmed.is_empty() {
            message.push(trimmed.to_owned());
        }
    }
    let mut message = message.join(" ");
    // "Start-VM : text" → "text": the cmdlet is in the error id.
    if let Some((head, rest)) = message.split_once(" : ") {
        if !head.contains(' ') && head.contains('-') {
            message = rest.to_owned();
        }
    }
    if message.len() > 2000 {
        message = message.chars().take(2000).collect();
    }
    PsError {
        message,
        category,
        exception,
        error_id,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quoting_doubles_every_single_quote_form() {
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(quote("a\u{2019}b"), "'a\u{2019}\u{2019}b'");
        assert_eq!(quote("$(rm -r)"), "'$(rm -r)'");
    }

    #[test]
    fn targets_are_names_or_guids() {
        assert_eq!(Target::parse("web").unwrap(), Target::Name("web".into()));
        assert_eq!(
            Target::parse("id:0F2E6A70-1B9C-4A3D-9E8F-0123456789AB").unwrap(),
            Target::Id("0f2e6a70-1b9c-4a3d-9e8f-0123456789ab".into())
        );
        match Target::parse("id:'; Remove-VM *") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#""'id:'; Remove-VM *': an id must be a VM GUID (id:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)""#
            ),
            Ok(_) => panic!("accepted"),
        }
        match Target::parse("a\nb") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#""domain name \"a\\nb\" contains control characters""#
            ),
            Ok(_) => panic!("accepted"),
        }
        match Target::parse("") {
            Err(e) => assert_eq!(format!("{e:?}"), r#""empty domain name""#),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn encoded_command_is_base64_utf16le() {
        let a = arguments("ab");
        assert_eq!(a, "-NoProfile -NonInteractive -EncodedCommand YQBiAA==");
    }

    #[test]
    fn clixml_errors_decode_to_message_category_and_id() {
        let stderr = concat!(
            "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\">",
            "<Obj S=\"progress\" RefId=\"0\"><TN RefId=\"0\"><T>System.Management.Automation.PSCustomObject</T></TN><MS><I64 N=\"SourceId\">1</I64></MS></Obj>",
            "<S S=\"Error\">Suspend-VM : 'vm1' failed to change state._x000D__x000A_</S>",
            "<S S=\"Error\">The operation cannot be performed while the object is in its current state._x000D__x000A_</S>",
            "<S S=\"Error\">At line:4 char:1_x000D__x000A_</S>",
            "<S S=\"Error\">+ Suspend-VM -VM $vm[0]_x000D__x000A_</S>",
            "<S S=\"Error\">    + CategoryInfo          : InvalidOperation: (:) [Suspend-VM], VirtualizationException_x000D__x000A_</S>",
            "<S S=\"Error\">    + FullyQualifiedErrorId : InvalidState,Microsoft.HyperV.PowerShell.Commands.SuspendVM_x000D__x000A_</S>",
            "<S S=\"Error\"> _x000D__x000A_</S></Objs>"
        );
        let e = parse_stderr(stderr.as_bytes()).unwrap();
        assert_eq!(
            e.message,
            "'vm1' failed to change state. The operation cannot be performed while the object is in its current state."
        );
        assert_eq!(e.category.as_deref(), Some("InvalidOperation"));
        assert_eq!(e.exception.as_deref(), Some("VirtualizationException"));
        assert_eq!(
            e.error_id.as_deref(),
            Some("InvalidState,Microsoft.HyperV.PowerShell.Commands.SuspendVM")
        );
        assert_eq!(e.code(), ErrorCode::WrongState);
        assert_eq!(e.fault(), "VirtualizationException");
    }

    #[test]
    fn not_found_text_classifies_and_progress_only_is_no_error() {
        let e = parse_stderr(b"Get-VM : Hyper-V was unable to find a virtual machine with name \"x\".\r\n    + CategoryInfo          : InvalidArgument: (x:String) [Get-VM], VirtualizationException\r\n    + FullyQualifiedErrorId : InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM\r\n").unwrap();
        assert_eq!(e.code(), ErrorCode::NotFound);
        let progress = "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><Obj S=\"progress\" RefId=\"0\"/></Objs>";
        assert!(parse_stderr(progress.as_bytes()).is_none());
    }

    #[test]
    fn escapes_decode_and_junk_survives() {
        assert_eq!(decode_escapes("a_x000D__x000A_b"), "a\r\nb");
        assert_eq!(decode_escapes("_x12_ _xZZZZ_ _x"), "_x12_ _xZZZZ_ _x");
        assert_eq!(decode_escapes("_xD800_"), "\u{fffd}");
    }
}
