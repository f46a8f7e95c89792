//! One function per command: call the client, render the answer. People get sentences and
//! tables on stdout; `--json` gets the API's JSON; errors go back to `main` for stderr and
//! the exit code.

use novacrond::client::AgentCall;
use std::io::Read;
use std::path::Path;

use novacron_domain::DomainState;
use novacrond::client::{
    Action, ActionOutcome, Client, DefinitionFormat, DomainStatus, ListFilter, Target, Tls,
};
use serde_json::{json, Value};

use crate::cli::{Cli, Command, WaitArg};
use crate::exit::CliError;
use crate::output;
use crate::pinning::Which;
use crate::progress::Spinner;
use crate::snapshots::Snap;

/// Definitions are a few KiB; the daemon refuses bodies over 1 MiB anyway. This only stops
/// `define -f /dev/zero` from eating memory before the server can say no.
const MAX_DEFINITION: u64 = 16 << 20;
/// Above this, `define` shows a spinner: parsing and validating take a moment.
const BIG_DEFINITION: usize = 256 << 10;

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let client = connect(&cli)?;
    if let Command::Hosts { command } = cli.command {
        return crate::remote::hosts(&client, cli.json, command).await;
    }
    if let Some(host) = &cli.remote_host {
        return crate::remote::run(&client, cli.json, host, cli.command).await;
    }
    let ctx = Ctx {
        client,
        json: cli.json,
    };
    match cli.command {
        Command::List {
            state,
            name,
            all,
            tag,
        } => ctx.list(state.map(Into::into), name, all, tag).await,
        Command::Info { name } => ctx.info(&name).await,
        Command::Define {
            validate: Some(file),
            ..
        } => ctx.validate(&file).await,
        Command::Define {
            file: Some(file), ..
        } => ctx.define(&file, false).await,
        Command::Define { .. } => Err(CliError::Input("define: give --file or --validate".into())),
        Command::Create { file } => ctx.define(&file, true).await,
        Command::Undefine { name } => ctx.undefine(&name).await,
        Command::Start { name, wait } => ctx.action(&name, Action::Start, wait, None).await,
        Command::Shutdown {
            name,
            timeout,
            force,
            mode,
            wait,
        } => {
            // Send only what was asked for, so the daemon's defaults apply otherwise.
            let mut body = serde_json::Map::new();
            if let Some(mode) = mode {
                body.insert("mode".into(), json!(mode));
            }
            if let Some(secs) = timeout {
                body.insert("timeout_secs".into(), json!(secs));
            }
            if force {
                body.insert("force".into(), json!(true));
            }
            let body = (!body.is_empty()).then_some(Value::Object(body));
            ctx.action(&name, Action::Shutdown, wait, body).await
        }
        Command::Destroy { name, wait } => ctx.action(&name, Action::Destroy, wait, None).await,
        Command::Suspend { name, wait } => ctx.action(&name, Action::Suspend, wait, None).await,
        Command::Resume { name, wait } => ctx.action(&name, Action::Resume, wait, None).await,
        Command::Reboot { name, wait } => ctx.action(&name, Action::Reboot, wait, None).await,
        Command::Reset { name, wait } => ctx.action(&name, Action::Reset, wait, None).await,
        Command::Dumpxml { name } => ctx.dumpxml(&name).await,
        Command::Autostart { name, disable } => ctx.autostart(&name, !disable).await,
        Command::Console { name, viewer } => {
            crate::console::attach(&ctx.client, &name, !viewer).await
        }
        Command::SetMetadata {
            name,
            title,
            description,
            tags,
            clear_tags,
        } => {
            let mut change = serde_json::Map::new();
            if let Some(t) = title {
                change.insert("title".into(), json!(t));
            }
            if let Some(d) = description {
                change.insert("description".into(), json!(d));
            }
            if clear_tags || !tags.is_empty() {
                change.insert("tags".into(), json!(tags));
            }
            ctx.set_metadata(&name, Value::Object(change)).await
        }
        Command::Domiflist { name } => ctx.domiflist(&name).await,
        Command::AttachInterface {
            name,
            kind,
            source,
            mode,
            model,
            mac,
            mtu,
            live,
            config,
            inbound,
            outbound,
            queues,
            vlan,
            target,
        } => {
            let request = json!({
                "type": kind, "source": source, "mode": mode, "model": model,
                "mac": mac, "mtu": mtu, "live": live, "config": config,
                "inbound": inbound, "outbound": outbound,
                "queues": queues, "vlan": vlan, "target": target,
            });
            let nic = ctx.client.attach_interface(&name, &request).await?;
            if ctx.json {
                return output::json(&nic);
            }
            output::line(&format!(
                "Interface {} attached to {name}{}",
                nic["mac"].as_str().unwrap_or_default(),
                nic["ifname"]
                    .as_str()
                    .map(|i| format!(" ({i})"))
                    .unwrap_or_default()
            ))
        }
        Command::DetachInterface {
            name,
            mac,
            live,
            config,
            wait,
        } => {
            ctx.client
                .detach_interface(&name, &mac, live, config, wait)
                .await?;
            output::line(&format!("Interface {mac} detached from {name}"))
        }
        Command::DomifSetlink {
            name,
            interface,
            state,
        } => {
            let up = match state.as_str() {
                "up" => true,
                "down" => false,
                other => {
                    return Err(CliError::Input(format!(
                        "state: '{other}' is not up or down"
                    )))
                }
            };
            ctx.client.set_interface_link(&name, &interface, up).await?;
            output::line(&format!("Link of {interface} on {name} is {state}"))
        }
        Command::Events { after } => ctx.events(after).await,
        Command::Qmp {
            name,
            command,
            arguments,
        } => ctx.qmp(&name, &command, arguments.as_deref()).await,
        Command::Guestinfo { name, agent } => {
            crate::agent::call(&ctx.client, ctx.json, &name, AgentCall::Info, &agent).await
        }
        Command::GuestAgentPing { name, agent } => {
            crate::agent::call(&ctx.client, ctx.json, &name, AgentCall::Ping, &agent).await
        }
        Command::Domfsfreeze { name, agent } => {
            crate::agent::call(&ctx.client, ctx.json, &name, AgentCall::FsFreeze, &agent).await
        }
        Command::Domfsthaw { name, agent } => {
            crate::agent::call(&ctx.client, ctx.json, &name, AgentCall::FsThaw, &agent).await
        }
        Command::Domifaddr {
            name,
            source,
            agent,
        } => crate::addresses::run(&ctx.client, ctx.json, &name, &source, agent.timeout).await,
        Command::QemuAgentCmd {
            name,
            command,
            agent,
        } => crate::agent::command(&ctx.client, ctx.json, &name, &command, &agent).await,
        Command::Operation { id } => ctx.operation(&id).await,
        Command::Host => ctx.host().await,
        Command::SnapshotCreateAs {
            name,
            snapshot,
            description,
            disk_only,
            quiesce,
            memspec,
            memory,
            live,
        } => {
            let cmd = Snap::CreateAs {
                name,
                snapshot,
                description,
                disk_only,
                quiesce,
                memory: crate::snapshots::memory_mode(memspec.as_deref(), memory, live)?,
            };
            crate::snapshots::run(&ctx.client, ctx.json, cmd).await
        }
        Command::SnapshotList { name, tree } => {
            crate::snapshots::run(&ctx.client, ctx.json, Snap::List { name, tree }).await
        }
        Command::SnapshotInfo { name, snapshot } => {
            crate::snapshots::run(&ctx.client, ctx.json, Snap::Info { name, snapshot }).await
        }
        Command::SnapshotDumpxml { name, snapshot } => {
            crate::snapshots::run(&ctx.client, ctx.json, Snap::Dumpxml { name, snapshot }).await
        }
        Command::SnapshotDelete { name, snapshot } => {
            crate::snapshots::run(&ctx.client, ctx.json, Snap::Delete { name, snapshot }).await
        }
        Command::SnapshotSchedule {
            name,
            every,
            keep,
            disable,
        } => {
            let cmd = Snap::Schedule {
                name,
                every,
                keep,
                disable,
            };
            crate::snapshots::run(&ctx.client, ctx.json, cmd).await
        }
        Command::SnapshotRevert { name, snapshot } => {
            crate::snapshots::run(&ctx.client, ctx.json, Snap::Revert { name, snapshot }).await
        }
        Command::Vcpupin {
            name,
            vcpu,
            cpulist,
            scope,
        } => pin(&ctx, &name, Which::Vcpu(vcpu), cpulist, scope).await,
        Command::Emulatorpin {
            name,
            cpulist,
            scope,
        } => pin(&ctx, &name, Which::Emulator, cpulist, scope).await,
        Command::Iothreadpin {
            name,
            iothread,
            cpulist,
            scope,
        } => pin(&ctx, &name, Which::Iothread(iothread), cpulist, scope).await,
        Command::Migrate(args) => crate::migrate::migrate(&ctx.client, ctx.json, args).await,
        Command::Migration { name } => crate::migrate::show(&ctx.client, ctx.json, &name).await,
        Command::MigrateCancel { name } => {
            crate::migrate::cancel(&ctx.client, ctx.json, &name).await
        }
        Command::MigratePostcopy { name } => {
            crate::migrate::postcopy(&ctx.client, ctx.json, &name).await
        }
        Command::Domblklist(a) => crate::disks::list(&ctx.client, ctx.json, a).await,
        Command::AttachDisk(a) => crate::disks::attach(&ctx.client, ctx.json, a).await,
        Command::DetachDisk(a) => crate::disks::detach(&ctx.client, ctx.json, a).await,
        Command::Blockresize(a) => crate::disks::resize(&ctx.client, ctx.json, a).await,
        Command::Blkdeviotune(a) => crate::disks::iotune(&ctx.client, ctx.json, a).await,
        Command::ChangeMedia(a) => crate::disks::media(&ctx.client, ctx.json, a).await,
        // Handled in main: it needs neither the daemon nor a runtime.
        Command::Completions { .. } => Ok(()),
        // Handled above.
        Command::Hosts { .. } => Ok(()),
        Command::Storage(cmd) => crate::volumes::run(&ctx.client, ctx.json, cmd).await,
        Command::Net(c) => crate::networks::run(&ctx.client, ctx.json, c).await,
        Command::Templates(c) => crate::templates::run(&ctx.client, ctx.json, c).await,
        Command::Resources(c) => crate::live_resources::run(&ctx.client, ctx.json, c).await,
        Command::NicTune(c) => crate::nic_tune::run(&ctx.client, ctx.json, c).await,
    }
}

/// `--url` (with `--token`) wins over `--socket`, which wins over the default socket.
fn connect(cli: &Cli) -> Result<Client, CliError> {
    let target = match (&cli.url, &cli.socket) {
        (Some(url), _) => {
            let target = Target::from_url(url)?;
            match &cli.cacert {
                Some(path) => {
                    let trust = Tls::from_ca_file(path).map_err(|e| {
                        CliError::Input(format!("--cacert {}: {e}", path.display()))
                    })?;
                    target.with_tls(trust)?
                }
                None => target,
            }
        }
        (None, Some(path)) => Target::Unix(path.clone()),
        (None, None) => Target::Unix(Target::default_socket()),
    };
    let client = Client::new(target);
    Ok(match &cli.token {
        Some(token) => client.with_token(token.clone()),
        None => client,
    })
}

struct Ctx {
    client: Client,
    json: bool,
}

impl Ctx {
    async fn list(
        &self,
        state: Option<DomainState>,
        name: Option<String>,
        all: bool,
        tag: Option<String>,
    ) -> Result<(), CliError> {
        let filter = ListFilter { state, name, tag };
        let mut domains = self.client.list(&filter).await?;
        // Like `virsh list`: inactive domains only on request.
        if !all && state.is_none() {
            domains.retain(|d| d.state.is_live());
        }
        if self.json {
            output::json(&domains)
        } else {
            output::line(&output::domain_table(&domains))
        }
    }

    async fn info(&self, name: &str) -> Result<(), CliError> {
        let info = self.client.get(name).await?;
        if self.json {
            output::json(&info)
        } else {
            output::line(&output::domain_info(&info))
        }
    }

    async fn define(&self, file: &Path, transient: bool) -> Result<(), CliError> {
        let body = read_definition(file)?;
        let format = DefinitionFormat::sniff(&body);
        let shown = file.display();
        let spinner = if transient {
            Spinner::start(!self.json, format!("creating a domain from {shown}"))
        } else {
            Spinner::start(
                !self.json && body.len() > BIG_DEFINITION,
                format!("defining from {shown}"),
            )
        };
        let status = if transient {
            self.client.create(body, format).await?
        } else {
            self.client.define(body, format).await?
        };
        let took = spinner.finish();
        if self.json {
            return output::json(&status);
        }
        let done = if transient {
            format!("domain {} created, {}", status.name, status.state)
        } else {
            format!("domain {} defined", status.name)
        };
        output::line(&format!("{done}{took}"))
    }

    async fn validate(&self, file: &Path) -> Result<(), CliError> {
        let body = read_definition(file)?;
        let format = DefinitionFormat::sniff(&body);
        let checked = self.client.validate(body, format).await?;
        if self.json {
            return output::json(&checked);
        }
        let argv: Vec<&str> = checked["argv"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        output::line(&format!(
            "{} is valid: domain {} ({}{}), trust {}\n{}",
            file.display(),
            checked["name"].as_str().unwrap_or("-"),
            checked["uuid"].as_str().unwrap_or("-"),
            if checked["replaces"] == true {
                ", replaces the current definition"
            } else {
                ""
            },
            checked["trust"].as_str().unwrap_or("-"),
            argv.join(" ")
        ))
    }

    async fn undefine(&self, name: &str) -> Result<(), CliError> {
        self.client.undefine(name).await?;
        // The API answers 204 with no body: nothing to print for scripts.
        if self.json {
            Ok(())
        } else {
            output::line(&format!("domain {name} undefined"))
        }
    }

    async fn action(
        &self,
        name: &str,
        action: Action,
        wait: WaitArg,
        body: Option<Value>,
    ) -> Result<(), CliError> {
        let slow = matches!(
            action,
            Action::Start | Action::Shutdown | Action::Destroy | Action::Reboot
        );
        let spinner = Spinner::start(
            slow && !wait.no_wait && !self.json,
            format!("{} {name}", progressive(action)),
        );
        let outcome = self
            .client
            .action(name, action, !wait.no_wait, body)
            .await?;
        let took = spinner.finish();
        match outcome {
            ActionOutcome::Done(status) if self.json => output::json(&status),
            ActionOutcome::Done(status) => output::line(&format!("{}{took}", state_line(&status))),
            ActionOutcome::Accepted(op) if self.json => output::json(&op),
            ActionOutcome::Accepted(op) => output::line(&format!(
                "{} of domain {name} is under way: operation {}",
                action.as_str(),
                op.id
            )),
        }
    }

    async fn domiflist(&self, name: &str) -> Result<(), CliError> {
        let nics = self.client.interfaces(name).await?;
        if self.json {
            return output::json(&nics);
        }
        let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        let rows: Vec<Vec<String>> = nics
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                vec![
                    s(&n["ifname"]),
                    s(&n["type"]),
                    s(&n["source"]),
                    s(&n["model"]),
                    s(&n["mac"]),
                    s(&n["link"]),
                ]
            })
            .collect();
        output::line(
            output::table(
                &["Interface", "Type", "Source", "Model", "MAC", "Link"],
                &rows,
            )
            .trim_end(),
        )
    }

    async fn set_metadata(&self, name: &str, change: Value) -> Result<(), CliError> {
        let metadata = self.client.set_metadata(name, &change).await?;
        if self.json {
            return output::json(&metadata);
        }
        let tags: Vec<&str> = metadata["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        output::line(&format!(
            "domain {name}: title {}, tags [{}]",
            metadata["title"].as_str().unwrap_or("-"),
            tags.join(", ")
        ))
    }

    async fn dumpxml(&self, name: &str) -> Result<(), CliError> {
        // XML either way: the API's answer here is XML, and --json must not change data.
        let xml = self.client.xml(name).await?;
        output::line(xml.trim_end())
    }

    async fn autostart(&self, name: &str, enabled: bool) -> Result<(), CliError> {
        let status = self.client.set_autostart(name, enabled).await?;
        if self.json {
            output::json(&status)
        } else if status.autostart {
            output::line(&format!("domain {name} starts with the daemon"))
        } else {
            output::line(&format!("domain {name} no longer starts with the daemon"))
        }
    }

    async fn events(&self, after: Option<u64>) -> Result<(), CliError> {
        let mut stream = self.client.events(after).await?;
        loop {
            let next = tokio::select! {
                next = stream.next() => next?,
                // Ctrl-C is how one stops following: a normal end, not an error.
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            let Some(event) = next else {
                let resume = stream
                    .last_seq()
                    .map(|s| format!("; resume with --after {s}"))
                    .unwrap_or_default();
                return Err(CliError::Other(format!(
                    "the daemon closed the event stream{resume}"
                )));
            };
            if self.json {
                output::json(&event)?;
            } else {
                output::line(&output::event_line(&event))?;
            }
        }
    }

    async fn qmp(
        &self,
        name: &str,
        command: &str,
        arguments: Option<&str>,
    ) -> Result<(), CliError> {
        let arguments = arguments.map(parse_qmp_arguments).transpose()?;
        let ret = self.client.qmp(name, command, arguments).await?;
        if self.json {
            output::json(&json!({ "return": ret }))
        } else {
            let pretty = serde_json::to_string_pretty(&ret)
                .map_err(|e| CliError::Other(format!("cannot encode JSON: {e}")))?;
            output::line(&pretty)
        }
    }

    async fn operation(&self, id: &str) -> Result<(), CliError> {
        let op = self.client.operation(id).await?;
        if self.json {
            output::json(&op)?;
        } else {
            // A long copy's bytes so far (vol-import), as the daemon last heard them.
            let progress = op
                .extra
                .get("progress")
                .and_then(|p| Some((p["done_bytes"].as_u64()?, p["total_bytes"].as_u64()?)))
                .map(|(done, total)| {
                    let pct = (done as f64 * 100.0 / total.max(1) as f64).min(100.0);
                    format!(
                        " ({:.1} of {:.1} MiB, {pct:.0}%)",
                        done as f64 / 1048576.0,
                        total as f64 / 1048576.0
                    )
                })
                .unwrap_or_default();
            output::line(&format!(
                "operation {}: {} of domain {} {}{progress}",
                op.id, op.operation, op.domain, op.status
            ))?;
        }
        match op.error {
            Some(e) if op.status == "failed" => Err(CliError::Failed {
                code: e.code,
                message: e.message,
            }),
            _ => Ok(()),
        }
    }

    async fn host(&self) -> Result<(), CliError> {
        let host = self.client.host().await?;
        if self.json {
            output::json(&host)
        } else {
            output::line(&output::host_info(&host))
        }
    }
}

async fn pin(
    ctx: &Ctx,
    name: &str,
    which: crate::pinning::Which,
    cpulist: Option<String>,
    scope: crate::cli::PinScopeArg,
) -> Result<(), CliError> {
    crate::pinning::run(
        &ctx.client,
        ctx.json,
        name,
        which,
        cpulist.as_deref(),
        scope,
    )
    .await
}

fn progressive(action: Action) -> &'static str {
    match action {
        Action::Start => "starting",
        Action::Shutdown => "shutting down",
        Action::Destroy => "destroying",
        Action::Suspend => "suspending",
        Action::Resume => "resuming",
        Action::Reboot => "rebooting",
        Action::Reset => "resetting",
    }
}

fn state_line(status: &DomainStatus) -> String {
    format!("domain {} is {}", status.name, status.state)
}

fn parse_qmp_arguments(text: &str) -> Result<Value, CliError> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(CliError::Input(
            "QMP arguments must be a JSON object, e.g. '{\"device\": \"drive0\"}'".into(),
        )),
        Err(e) => Err(CliError::Input(format!("QMP arguments are not JSON: {e}"))),
    }
}

/// Reads a definition file, or standard input for `-`, up to a bound.
fn read_definition(file: &Path) -> Result<Vec<u8>, CliError> {
    let io_err = |source| CliError::Io {
        what: format!("cannot read {}", file.display()),
        source,
    };
    let mut body = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_DEFINITION + 1)
            .read_to_end(&mut body)
            .map_err(io_err)?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(MAX_DEFINITION + 1).read_to_end(&mut body))
            .map_err(io_err)?;
    }
    if body.len() as u64 > MAX_DEFINITION {
        return Err(CliError::Input(format!(
            "{} is over {} bytes; that is no domain definition",
            file.display(),
            MAX_DEFINITION
        )));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CliError::Input(format!("{} is empty", file.display())));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_arguments_must_be_an_object() {
        assert!(parse_qmp_arguments(r#"{"a": 1}"#).is_ok());
        for bad in ["[1]", "nope", "\"s\""] {
            let e = parse_qmp_arguments(bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::exit::INVALID, "{bad}");
        }
    }

    #[test]
    fn reads_definitions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.xml");
        std::fs::write(&path, " <domain/>").unwrap();
        assert_eq!(read_definition(&path).unwrap(), b" <domain/>");
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(
            read_definition(&path).unwrap_err().exit_code(),
            crate::exit::INVALID
        );
        let missing = read_definition(&dir.path().join("absent")).unwrap_err();
        assert_eq!(missing.exit_code(), crate::exit::OTHER);
        assert!(missing.to_string().contains("absent"), "{missing}");
    }
}
