//! `novactl console NAME`: the terminal in raw mode on the domain's serial console websocket;
//! Ctrl-] (0x1d) leaves, as in `virsh console`.

use std::io::Write;
use std::process::{Command, Stdio};

use futures_util::{SinkExt, StreamExt};
use novacrond::client::Client;
use tokio_tungstenite::tungstenite::Message;

use crate::exit::CliError;

const ESCAPE: u8 = 0x1d;

/// The terminal's settings, restored (from `stty -g`) when dropped.
struct RawTerminal(Option<String>);

impl RawTerminal {
    fn enter() -> RawTerminal {
        let saved = Command::new("stty")
            .arg("-g")
            .stdin(Stdio::inherit())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if saved.is_some() {
            let _ = Command::new("stty")
                .args(["raw", "-echo"])
                .stdin(Stdio::inherit())
                .status();
        }
        RawTerminal(saved)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = Command::new("stty")
                .arg(saved)
                .stdin(Stdio::inherit())
                .status();
        }
    }
}

pub async fn attach(client: &Client, name: &str, writer: bool) -> Result<(), CliError> {
    let ws = client.console(name, writer).await?;
    eprint!("Connected to domain '{name}'\r\nEscape character is ^] (Ctrl + ])\r\n");
    let _raw = RawTerminal::enter();
    let (mut tx, mut rx) = ws.split();
    // Keystrokes from a plain thread (stdin blocks); it ends with the process.
    let (keys_tx, mut keys_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 1024];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || keys_tx.blocking_send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut stdout = std::io::stdout();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    let _ = stdout.write_all(&b);
                    let _ = stdout.flush();
                }
                Some(Ok(Message::Close(f))) => {
                    let why = f.map(|f| f.reason.to_string()).unwrap_or_default();
                    eprint!("\r\nConsole closed: {why}\r\n");
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    eprint!("\r\nConsole connection lost: {e}\r\n");
                    break;
                }
                None => break,
            },
            k = keys_rx.recv(), if stdin_open => match k {
                None => stdin_open = false,
                Some(input) => {
                    let (keys, leave) = match input.iter().position(|&b| b == ESCAPE) {
                        Some(i) => (&input[..i], true),
                        None => (&input[..], false),
                    };
                    if !keys.is_empty() && tx.send(Message::Binary(keys.to_vec().into())).await.is_err() {
                        break;
                    }
                    if leave {
                        let _ = tx.send(Message::Close(None)).await;
                        eprint!("\r\n");
                        break;
                    }
                }
            },
        }
    }
    Ok(())
}
