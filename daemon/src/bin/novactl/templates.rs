//! Domain templates: `template-create`, `template-list`, `template-info`, `template-update`,
//! `template-delete`, `template-deploy` (Proxmox's template and linked-clone deploy, with
//! Incus-style versions).

use clap::Subcommand;
use novacrond::client::Client;
use serde_json::Value;

use crate::exit::CliError;
use crate::output;

// The variants' names are the subcommands' (`template-create`...), flattened into novactl's.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Make a template from a stopped domain: its disks are copied into read-only bases
    TemplateCreate {
        name: String,
        domain: String,
        /// The pool for the bases
        #[arg(long)]
        pool: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List templates with their versions
    TemplateList,
    /// A template's versions, bases and the domains deployed from each
    TemplateInfo { name: String },
    /// Add a version from a stopped domain (--from), or change the description
    TemplateUpdate {
        name: String,
        /// The domain the new version is made from
        #[arg(long = "from")]
        domain: Option<String>,
        #[arg(long)]
        pool: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a template (or one --version); refused while a deployed domain uses its bases
    TemplateDelete {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Deploy a new domain from a template: linked clones of its bases, defined in one call
    TemplateDeploy {
        template: String,
        newname: String,
        /// Default: the latest version
        #[arg(long)]
        version: Option<u32>,
        /// The pool for the clones (default: the bases' pool)
        #[arg(long)]
        pool: Option<String>,
        #[arg(long)]
        start: bool,
    },
}

fn rows(list: &Value) -> Vec<Vec<String>> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                t["name"].as_str().unwrap_or_default().to_owned(),
                t["latest"].to_string(),
                t["versions"].as_array().map_or(0, Vec::len).to_string(),
                t["description"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect()
}

fn info_text(t: &Value) -> String {
    let mut out = output::fields(&[
        ("Name", t["name"].as_str().unwrap_or_default().to_owned()),
        (
            "Description",
            t["description"].as_str().unwrap_or("-").to_owned(),
        ),
        ("Latest", t["latest"].to_string()),
    ]);
    for v in t["versions"].as_array().into_iter().flatten() {
        let bases: Vec<String> = v["bases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "{}={}/{}",
                    b["disk"].as_str().unwrap_or_default(),
                    v["pool"].as_str().unwrap_or_default(),
                    b["volume"].as_str().unwrap_or_default()
                )
            })
            .collect();
        let deployed: Vec<&str> = v["deployed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push_str(&format!(
            "\nVersion {} (from {}): {}; deployed: {}",
            v["version"],
            v["source"].as_str().unwrap_or_default(),
            bases.join(" "),
            if deployed.is_empty() {
                "-".to_owned()
            } else {
                deployed.join(", ")
            }
        ));
    }
    out
}

pub async fn run(client: &Client, json: bool, cmd: TemplateCommand) -> Result<(), CliError> {
    use TemplateCommand as C;
    match cmd {
        C::TemplateCreate {
            name,
            domain,
            pool,
            description,
        } => {
            let t = client
                .template_create(&name, &domain, pool.as_deref(), description.as_deref())
                .await?;
            if json {
                return output::json(&t);
            }
            output::line(&format!(
                "Template {name} created from {domain} (version 1)"
            ))
        }
        C::TemplateList => {
            let list = client.template_list().await?;
            if json {
                return output::json(&list);
            }
            output::line(
                output::table(&["Name", "Latest", "Versions", "Description"], &rows(&list))
                    .trim_end(),
            )
        }
        C::TemplateInfo { name } => {
            let t = client.template_info(&name).await?;
            if json {
                return output::json(&t);
            }
            output::line(&info_text(&t))
        }
        C::TemplateUpdate {
            name,
            domain,
            pool,
            description,
        } => {
            let t = client
                .template_update(
                    &name,
                    domain.as_deref(),
                    pool.as_deref(),
                    description.as_deref(),
                )
                .await?;
            if json {
                return output::json(&t);
            }
            output::line(&format!(
                "Template {name} updated (latest version {})",
                t["latest"]
            ))
        }
        C::TemplateDelete { name, version } => {
            client.template_delete(&name, version).await?;
            match version {
                Some(v) => output::line(&format!("Template {name} version {v} deleted")),
                None => output::line(&format!("Template {name} deleted")),
            }
        }
        C::TemplateDeploy {
            template,
            newname,
            version,
            pool,
            start,
        } => {
            let d = client
                .template_deploy(&template, &newname, version, pool.as_deref(), start)
                .await?;
            if json {
                return output::json(&d);
            }
            output::line(&format!(
                "Domain {newname} deployed from template {template} version {}",
                d["version"]
            ))
        }
    }
}
