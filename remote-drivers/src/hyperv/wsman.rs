//! WS-Management (MS-WSMV) remote shell: Create a `cmd` shell, run one command in it, Receive
//! its output until the command is Done, Signal terminate, Delete the shell.
//!
//! One shell per script run (each driver call runs one script): a shell is cheap for WinRM, and
//! nothing leaks between calls. Output streams arrive base64-encoded and are bounded in total.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::time::Instant;

use super::error::HypervError;
use super::transport::Transport;
use super::xml::{escape, local, walk, Item as Node};

const SHELL_URI: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";
const A_CREATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create";
const A_DELETE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete";
const A_COMMAND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
const A_RECEIVE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive";
const A_SIGNAL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal";
const SIGNAL_TERMINATE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate";
const STATE_DONE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done";
/// The largest envelope we let the server send.
const MAX_ENVELOPE_SIZE: usize = 512_000;
/// Total stdout + stderr one script may produce.
const MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// How long one Receive may wait server-side before answering "nothing yet".
const RECEIVE_WAIT: Duration = Duration::from_secs(20);

/// What a finished command produced.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i64,
}

/// A SOAP fault from the WinRM service itself (not from the script).
#[derive(Debug, Clone, Default)]
pub struct Fault {
    pub subcode: String,
    pub reason: String,
    pub wsman_code: Option<String>,
}

/// The fields of an answer we use.
#[derive(Debug, Default)]
struct Answer {
    shell_id: Option<String>,
    command_id: Option<String>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    done: bool,
    exit_code: Option<i64>,
    fault: Option<Fault>,
    product_vendor: Option<String>,
    product_version: Option<String>,
}

fn parse(body: &[u8]) -> Result<Answer, HypervError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| HypervError::Protocol("WS-Man answer is not UTF-8".into()))?;
    let mut a = Answer::default();
    let mut fault = Fault::default();
    let mut in_fault = false;
    let mut stream: Option<String> = None;
    let mut b64_error = None;
    let mut too_much = false;
    walk(text, |node| match node {
        Node::Open { path, attrs } => {
            let name = path.last().map(String::as_str).unwrap_or("");
            let attr = |k: &str| {
                attrs
                    .iter()
                    .find(|(n, _)| local(n) == k)
                    .map(|(_, v)| v.clone())
            };
            match name {
                "Fault" => in_fault = true,
                "WSManFault" => fault.wsman_code = attr("Code"),
                "Stream" => stream = attr("Name"),
                "CommandState" if attr("State").as_deref() == Some(STATE_DONE) => {
                    a.done = true;
                }
                _ => {}
            }
        }
        Node::Text { path, text } => {
            let name = path.last().map(String::as_str).unwrap_or("");
            let parent = path
                .len()
                .checked_sub(2)
                .and_then(|i| path.get(i))
                .map(String::as_str)
                .unwrap_or("");
            match (parent, name) {
                (_, "ShellId") => a
                    .shell_id
                    .get_or_insert_with(String::new)
                    .push_str(text.trim()),
                (_, "CommandId") => a
                    .command_id
                    .get_or_insert_with(String::new)
                    .push_str(text.trim()),
                (_, "Stream") => {
                    match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
                        Ok(bytes) => {
                            if a.stdout.len() + a.stderr.len() + bytes.len() > MAX_OUTPUT {
                                too_much = true;
                            } else if stream.as_deref() == Some("stderr") {
                                a.stderr.extend_from_slice(&bytes);
                            } else {
                                a.stdout.extend_from_slice(&bytes);
                            }
                        }
                        Err(e) => b64_error = Some(e.to_string()),
                    }
                }
                (_, "ExitCode") => a.exit_code = text.trim().parse().ok(),
                ("Subcode", "Value") if in_fault => fault.subcode.push_str(text.trim()),
                ("Reason", "Text") if in_fault => fault.reason.push_str(text),
                (_, "Message") if in_fault && fault.reason.is_empty() => {
                    fault.reason.push_str(text)
                }
                (_, "ProductVendor") => a
                    .product_vendor
                    .get_or_insert_with(String::new)
                    .push_str(text.trim()),
                (_, "ProductVersion") => a
                    .product_version
                    .get_or_insert_with(String::new)
                    .push_str(text.trim()),
                _ => {}
            }
        }
        Node::Close { .. } => {}
    })
    .map_err(|e| HypervError::Protocol(format!("WS-Man answer: {e}")))?;
    if let Some(e) = b64_error {
        return Err(HypervError::Protocol(format!(
            "WS-Man output stream is not base64: {e}"
        )));
    }
    if too_much {
        return Err(HypervError::Protocol(format!(
            "command output larger than {MAX_OUTPUT} bytes"
        )));
    }
    if in_fault {
        fault.reason = fault.reason.trim().to_owned();
        a.fault = Some(fault);
    }
    Ok(a)
}

fn message_id() -> String {
    let mut b = [0u8; 16];
    // A message id only needs to be unique; fall back to the clock if randomness fails.
    if getrandom::getrandom(&mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = nanos.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn envelope(
    to: &str,
    action: &str,
    shell_id: Option<&str>,
    options: &str,
    timeout: Duration,
    body: &str,
) -> String {
    let selector = shell_id
        .map(|id| {
            format!(
                "<w:SelectorSet><w:Selector Name=\"ShellId\">{}</w:Selector></w:SelectorSet>",
                escape(id)
            )
        })
        .unwrap_or_default();
    format!(
        concat!(
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" ",
            "xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" ",
            "xmlns:w=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\" ",
            "xmlns:p=\"http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd\" ",
            "xmlns:rsp=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell\">",
            "<s:Header><a:To>{to}</a:To>",
            "<a:ReplyTo><a:Address s:mustUnderstand=\"true\">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>",
            "<w:MaxEnvelopeSize s:mustUnderstand=\"true\">{max}</w:MaxEnvelopeSize>",
            "<a:MessageID>{id}</a:MessageID>",
            "<w:Locale xml:lang=\"en-US\" s:mustUnderstand=\"false\"/>",
            "<p:DataLocale xml:lang=\"en-US\" s:mustUnderstand=\"false\"/>",
            "<w:OperationTimeout>PT{secs:.3}S</w:OperationTimeout>",
            "<w:ResourceURI s:mustUnderstand=\"true\">{uri}</w:ResourceURI>",
            "<a:Action s:mustUnderstand=\"true\">{action}</a:Action>",
            "{selector}{options}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
        ),
        to = escape(to),
        max = MAX_ENVELOPE_SIZE,
        id = message_id(),
        secs = timeout.as_secs_f64().max(0.1),
        uri = SHELL_URI,
        action = action,
        selector = selector,
        options = options,
        body = body,
    )
}

/// The unauthenticated Identify request (`WSMANIDENTIFY: unauthenticated`).
pub fn identify_envelope() -> &'static str {
    concat!(
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" ",
        "xmlns:wsmid=\"http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd\">",
        "<s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>"
    )
}

/// `(ProductVendor, ProductVersion)` from an IdentifyResponse.
pub fn parse_identify(body: &[u8]) -> Option<(String, String)> {
    let a = parse(body).ok()?;
    Some((a.product_vendor?, a.product_version.unwrap_or_default()))
}

pub struct Shell {
    transport: Arc<Transport>,
}

/// Terminates the command and deletes the shell when `run` is dropped before it could (the
/// caller's time limit fired): each leaked shell keeps a powershell.exe alive on the host
/// until WinRM's idle timeout, and after MaxShellsPerUser (30 by default) the user can open
/// no more.
struct ShellGuard {
    transport: Arc<Transport>,
    to: String,
    shell_id: Option<String>,
    command_id: Option<String>,
}

impl Drop for ShellGuard {
    fn drop(&mut self) {
        let Some(shell_id) = self.shell_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shell = Shell {
            transport: self.transport.clone(),
        };
        let to = std::mem::take(&mut self.to);
        let command_id = self.command_id.take();
        tracing::debug!(shell = %shell_id, "call abandoned; closing its WinRM shell");
        runtime.spawn(async move {
            if let Some(command_id) = command_id {
                shell.signal(&to, &shell_id, &command_id).await;
            }
            shell.delete(&to, &shell_id).await;
        });
    }
}

impl Shell {
    pub fn new(transport: Arc<Transport>) -> Self {
        Self { transport }
    }

    async fn signal(&self, to: &str, shell_id: &str, command_id: &str) {
        let signal = envelope(
            to,
            A_SIGNAL,
            Some(shell_id),
            "",
            RECEIVE_WAIT,
            &format!(
                "<rsp:Signal CommandId=\"{}\"><rsp:Code>{SIGNAL_TERMINATE}</rsp:Code></rsp:Signal>",
                escape(command_id)
            ),
        );
        if let Err(e) = self.call(signal).await {
            tracing::debug!(command = %command_id, "WinRM signal terminate failed: {e}");
        }
    }

    async fn delete(&self, to: &str, shell_id: &str) {
        let delete = envelope(to, A_DELETE, Some(shell_id), "", RECEIVE_WAIT, "");
        if let Err(e) = self.call(delete).await {
            // The shell times out server-side; the command's result is still what matters.
            tracing::debug!(shell = %shell_id, "WinRM shell delete failed: {e}");
        }
    }

    async fn call(&self, envelope: String) -> Result<Answer, HypervError> {
        let (status, body) = self.transport.post(&envelope).await?;
        let answer = parse(&body);
        match (status, answer) {
            (_, Ok(a)) if a.fault.is_some() => Err(HypervError::Fault(a.fault.unwrap_or_default())),
            (200, Ok(a)) => Ok(a),
            (status, _) => Err(HypervError::Transport(
                crate::http::TransportError::Status {
                    status,
                    body: crate::http::excerpt(&body),
                }
                .into_error(self.transport.host()),
            )),
        }
    }

    /// Runs `powershell.exe` with `arguments` in a fresh shell. With a `deadline`, a command
    /// still running then is terminated and `HypervError::Deadline` returned.
    pub async fn run(
        &self,
        arguments: &str,
        deadline: Option<Instant>,
    ) -> Result<Output, HypervError> {
        let to = self.transport.endpoint().as_str().to_owned();
        let create = envelope(
            &to,
            A_CREATE,
            None,
            "<w:OptionSet><w:Option Name=\"WINRS_NOPROFILE\">TRUE</w:Option><w:Option Name=\"WINRS_CODEPAGE\">65001</w:Option></w:OptionSet>",
            RECEIVE_WAIT,
            "<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>",
        );
        let shell_id = self
            .call(create)
            .await?
            .shell_id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| HypervError::Protocol("Create answered without a ShellId".into()))?;
        let mut guard = ShellGuard {
            transport: self.transport.clone(),
            to: to.clone(),
            shell_id: Some(shell_id.clone()),
            command_id: None,
        };
        let result = self
            .command(&to, &shell_id, arguments, deadline, &mut guard)
            .await;
        self.delete(&to, &shell_id).await;
        guard.shell_id = None;
        result
    }

    async fn command(
        &self,
        to: &str,
        shell_id: &str,
        arguments: &str,
        deadline: Option<Instant>,
        guard: &mut ShellGuard,
    ) -> Result<Output, HypervError> {
        let command = envelope(
            to,
            A_COMMAND,
            Some(shell_id),
            "<w:OptionSet><w:Option Name=\"WINRS_CONSOLEMODE_STDIN\">TRUE</w:Option><w:Option Name=\"WINRS_SKIP_CMD_SHELL\">TRUE</w:Option></w:OptionSet>",
            RECEIVE_WAIT,
            &format!(
                "<rsp:CommandLine><rsp:Command>powershell.exe</rsp:Command><rsp:Arguments>{}</rsp:Arguments></rsp:CommandLine>",
                escape(arguments)
            ),
        );
        let command_id = self
            .call(command)
            .await?
            .command_id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| HypervError::Protocol("Command answered without a CommandId".into()))?;
        guard.command_id = Some(command_id.clone());
        let mut out = Output::default();
        // The server must answer "nothing yet" well before our own request time limit.
        let longest = RECEIVE_WAIT
            .min(self.transport.request_timeout() * 3 / 4)
            .max(Duration::from_millis(100));
        let outcome = loop {
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Err(HypervError::Deadline);
                    }
                    left.min(longest)
                }
                None => longest,
            };
            let receive = envelope(
                to,
                A_RECEIVE,
                Some(shell_id),
                "<w:OptionSet><w:Option Name=\"WSMAN_CMDSHELL_OPTION_KEEPALIVE\">TRUE</w:Option></w:OptionSet>",
                wait,
                &format!(
                    "<rsp:Receive><rsp:DesiredStream CommandId=\"{}\">stdout stderr</rsp:DesiredStream></rsp:Receive>",
                    escape(&command_id)
                ),
            );
            match self.call(receive).await {
                Ok(a) => {
                    if out.stdout.len() + out.stderr.len() + a.stdout.len() + a.stderr.len()
                        > MAX_OUTPUT
                    {
                        break Err(HypervError::Protocol(format!(
                            "command output larger than {MAX_OUTPUT} bytes"
                        )));
                    }
                    out.stdout.extend_from_slice(&a.stdout);
                    out.stderr.extend_from_slice(&a.stderr);
                    if a.done {
                        out.exit_code = a.exit_code.unwrap_or(0);
                        break Ok(());
                    }
                }
                // "Nothing yet" (MS-WSMV: w:TimedOut, WinRM code 2150858793): ask again.
                Err(HypervError::Fault(f)) if f.subcode.ends_with("TimedOut") => {}
                Err(e) => break Err(e),
            }
        };
        self.signal(to, shell_id, &command_id).await;
        guard.command_id = None;
        outcome.map(|()| out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn receive_answer_streams_state_and_exit_code() {
        let body = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Body><rsp:ReceiveResponse><rsp:Stream Name="stdout" CommandId="C">W10=</rsp:Stream><rsp:Stream Name="stderr" CommandId="C">b29w</rsp:Stream><rsp:Stream Name="stdout" CommandId="C" End="true"></rsp:Stream><rsp:CommandState CommandId="C" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"><rsp:ExitCode>3</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse></s:Body></s:Envelope>"#;
        let a = parse(body.as_bytes()).unwrap();
        assert_eq!(a.stdout, b"[]");
        assert_eq!(a.stderr, b"oop");
        assert!(a.done);
        assert_eq!(a.exit_code, Some(3));
    }

    #[test]
    fn faults_keep_subcode_and_reason() {
        let body = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Body><s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="">The WS-Management service cannot complete the operation within the time specified in OperationTimeout.</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858793"/></s:Detail></s:Fault></s:Body></s:Envelope>"#;
        let f = parse(body.as_bytes()).unwrap().fault.unwrap();
        assert_eq!(f.subcode, "w:TimedOut");
        assert!(f.reason.contains("OperationTimeout"), "{}", f.reason);
        assert_eq!(f.wsman_code.as_deref(), Some("2150858793"));
    }

    #[test]
    fn envelopes_escape_what_they_carry() {
        let e = envelope(
            "http://h/wsman",
            A_COMMAND,
            Some("a<b"),
            "",
            RECEIVE_WAIT,
            "",
        );
        assert!(e.contains("a&lt;b") && !e.contains("a<b"), "{e}");
        assert!(walk(&e, |_| {}).is_ok());
    }

    #[test]
    fn hostile_answers_error_without_panics() {
        for body in [
            "",
            "<a>",
            "<!DOCTYPE x [<!ENTITY e 'x'>]><a>&e;</a>",
            "<Stream Name='stdout'>!!!</Stream>",
            &"<a>".repeat(100),
        ] {
            let _ = parse(body.as_bytes());
        }
        match parse(b"<Stream Name='stdout'>!!!</Stream>") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Protocol("WS-Man output stream is not base64: Invalid symbol 33, offset 0.")"#
            ),
            Ok(_) => panic!("accepted"),
        }
    }
}
