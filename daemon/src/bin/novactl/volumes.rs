//! Pools and volumes with virsh's names: `pool-list`, `pool-info`, `pool-define`,
//! `vol-create-as`, `vol-list`, `vol-info`, `vol-resize`, `vol-delete`, `vol-clone`,
//! `vol-upload`, `vol-download`, `vol-dumpxml`...

use std::path::PathBuf;

use clap::Subcommand;
use novacron_domain::storage::{parse_size, VolumeConfig, VolumeFormat};
use novacrond::client::Client;

use crate::exit::CliError;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// List storage pools (every storage root is one; `default` is <state_dir>/images)
    PoolList,
    /// A pool's state and capacity
    PoolInfo { pool: String },
    /// A pool as libvirt pool XML
    PoolDumpxml { pool: String },
    /// Define a dir pool from libvirt pool XML (its directory must be inside a storage root)
    PoolDefine { file: PathBuf },
    /// Forget a defined pool (its files stay)
    PoolUndefine { pool: String },
    /// List a pool's volumes with capacity and allocation
    VolList {
        #[arg(long, default_value = "default")]
        pool: String,
    },
    /// A volume's format, capacity, allocation and backing file
    VolInfo {
        vol: String,
        #[arg(long, default_value = "default")]
        pool: String,
    },
    /// A volume as libvirt volume XML
    VolDumpxml {
        vol: String,
        #[arg(long, default_value = "default")]
        pool: String,
    },
    /// Create a volume, as `virsh vol-create-as POOL NAME CAPACITY [--allocation] [--format]`
    VolCreateAs {
        pool: String,
        name: String,
        /// Size: bytes or with a unit (64M, 10G: binary as virsh)
        capacity: String,
        /// Bytes to preallocate (0: sparse)
        #[arg(long)]
        allocation: Option<String>,
        /// raw or qcow2
        #[arg(long, default_value = "raw")]
        format: String,
    },
    /// Create a volume from libvirt volume XML
    VolCreate { pool: String, file: PathBuf },
    /// Resize a volume of a stopped guest (shrinking needs --shrink)
    VolResize {
        vol: String,
        capacity: String,
        #[arg(long, default_value = "default")]
        pool: String,
        #[arg(long)]
        shrink: bool,
    },
    /// Delete a volume (refused while a domain uses it)
    VolDelete {
        vol: String,
        #[arg(long, default_value = "default")]
        pool: String,
    },
    /// Clone a volume: a full copy, or --linked (a qcow2 overlay; the source becomes a
    /// read-only base)
    VolClone {
        vol: String,
        newname: String,
        #[arg(long, default_value = "default")]
        pool: String,
        #[arg(long)]
        linked: bool,
        /// The copy's format (raw or qcow2) [default: the source's]
        #[arg(long)]
        format: Option<String>,
        /// Return at once with the operation's id
        #[arg(long)]
        no_wait: bool,
    },
    /// Upload a file's bytes into a volume (from --offset, to resume a broken-off upload)
    VolUpload {
        vol: String,
        file: PathBuf,
        #[arg(long, default_value = "default")]
        pool: String,
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Download a volume's bytes into a file
    VolDownload {
        vol: String,
        file: PathBuf,
        #[arg(long, default_value = "default")]
        pool: String,
    },
    /// Import a file on the daemon's host as a new volume (copied sparse; --move renames it
    /// into the pool). Non-admins may import only files inside the storage roots
    VolImport {
        pool: String,
        name: String,
        /// The file (relative paths are taken from the current directory)
        path: PathBuf,
        /// Move the file into the pool instead of copying it
        #[arg(long = "move")]
        move_file: bool,
        /// The format the file must have (raw or qcow2) [default: detected]
        #[arg(long)]
        format: Option<String>,
        /// Return at once with the operation's id
        #[arg(long)]
        no_wait: bool,
    },
}

fn size(field: &str, s: &str) -> Result<u64, CliError> {
    parse_size(s).map_err(|e| CliError::Input(format!("{field}: {e}")))
}

fn read(file: &PathBuf) -> Result<String, CliError> {
    std::fs::read_to_string(file).map_err(|source| CliError::Io {
        what: file.display().to_string(),
        source,
    })
}

pub async fn run(client: &Client, json: bool, cmd: StorageCommand) -> Result<(), CliError> {
    use StorageCommand as C;
    match cmd {
        C::PoolList => {
            let pools = client.pool_list().await?;
            if json {
                return output::json(&pools);
            }
            let rows: Vec<Vec<String>> = pools
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.state.clone(),
                        p.kind.clone(),
                        p.path.clone(),
                        p.available.map(output::bytes).unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            output::line(&output::table(
                &["NAME", "STATE", "KIND", "PATH", "AVAILABLE"],
                &rows,
            ))
        }
        C::PoolInfo { pool } => {
            let p = client.pool_info(&pool).await?;
            if json {
                return output::json(&p);
            }
            let b = |v: Option<u64>| v.map(output::bytes).unwrap_or_else(|| "-".into());
            let mut f = vec![
                ("Name", p.name.clone()),
                ("State", p.state.clone()),
                ("Kind", p.kind.clone()),
                ("Path", p.path.clone()),
                ("Capacity", b(p.capacity)),
                ("Allocation", b(p.allocation)),
                ("Available", b(p.available)),
            ];
            if let Some(problem) = &p.problem {
                f.push(("Problem", problem.clone()));
            }
            output::line(&output::fields(&f))
        }
        C::PoolDumpxml { pool } => output::line(client.pool_xml(&pool).await?.trim_end()),
        C::PoolDefine { file } => {
            let p = client.pool_define(read(&file)?).await?;
            if json {
                return output::json(&p);
            }
            output::line(&format!("Pool {} defined from {}", p.name, file.display()))
        }
        C::PoolUndefine { pool } => {
            client.pool_undefine(&pool).await?;
            output::line(&format!("Pool {pool} has been undefined"))
        }
        C::VolList { pool } => {
            let list = client.vol_list(&pool).await?;
            if json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .volumes
                .iter()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        v.format.as_str().to_owned(),
                        output::bytes(v.capacity),
                        output::bytes(v.allocation),
                        v.path.clone(),
                    ]
                })
                .collect();
            output::line(&output::table(
                &["NAME", "FORMAT", "CAPACITY", "ALLOCATION", "PATH"],
                &rows,
            ))
        }
        C::VolInfo { vol, pool } => show(json, &client.vol_info(&pool, &vol).await?),
        C::VolDumpxml { vol, pool } => output::line(client.vol_xml(&pool, &vol).await?.trim_end()),
        C::VolCreateAs {
            pool,
            name,
            capacity,
            allocation,
            format,
        } => {
            let format: VolumeFormat = format.parse().map_err(CliError::Input)?;
            let config = VolumeConfig {
                name,
                capacity: size("capacity", &capacity)?,
                allocation: allocation.map(|a| size("allocation", &a)).transpose()?,
                format,
                backing: None,
            };
            let v = client.vol_create(&pool, &config).await?;
            if json {
                return output::json(&v);
            }
            output::line(&format!("Vol {} created", v.name))
        }
        C::VolCreate { pool, file } => {
            let v = client.vol_create_xml(&pool, read(&file)?).await?;
            if json {
                return output::json(&v);
            }
            output::line(&format!("Vol {} created from {}", v.name, file.display()))
        }
        C::VolResize {
            vol,
            capacity,
            pool,
            shrink,
        } => {
            let v = client
                .vol_resize(&pool, &vol, size("capacity", &capacity)?, shrink)
                .await?;
            if json {
                return output::json(&v);
            }
            output::line(&format!(
                "Size of volume '{vol}' successfully changed to {}",
                output::bytes(v.capacity)
            ))
        }
        C::VolDelete { vol, pool } => {
            client.vol_delete(&pool, &vol).await?;
            output::line(&format!("Vol {vol} deleted"))
        }
        C::VolClone {
            vol,
            newname,
            pool,
            linked,
            format,
            no_wait,
        } => {
            let v = client
                .vol_clone(&pool, &vol, &newname, linked, format.as_deref(), !no_wait)
                .await?;
            if json || no_wait {
                return output::json(&v);
            }
            output::line(&format!("Vol {newname} cloned from {vol}"))
        }
        C::VolUpload {
            vol,
            file,
            pool,
            offset,
        } => {
            let r = client.vol_upload(&pool, &vol, &file, offset).await?;
            if json {
                return output::json(&r);
            }
            output::line(&format!(
                "Uploaded {} bytes into {pool}/{vol} (ends at offset {})",
                r["written"], r["end"]
            ))
        }
        C::VolImport {
            pool,
            name,
            path,
            move_file,
            format,
            no_wait,
        } => {
            // The daemon wants an absolute path; a relative one is this shell's.
            let path = std::path::absolute(&path).map_err(|source| CliError::Io {
                what: path.display().to_string(),
                source,
            })?;
            let path = path
                .to_str()
                .ok_or_else(|| CliError::Input(format!("{}: not a UTF-8 path", path.display())))?;
            let v = client
                .vol_import(&pool, &name, path, move_file, format.as_deref(), !no_wait)
                .await?;
            if json || no_wait {
                return output::json(&v);
            }
            output::line(&format!("Vol {name} imported from {path}"))
        }
        C::VolDownload { vol, file, pool } => {
            let n = client.vol_download(&pool, &vol, &file).await?;
            if json {
                return output::json(&serde_json::json!({ "written": n }));
            }
            output::line(&format!(
                "Downloaded {n} bytes of {pool}/{vol} into {}",
                file.display()
            ))
        }
    }
}

fn show(json: bool, v: &novacron_domain::storage::VolumeInfo) -> Result<(), CliError> {
    if json {
        return output::json(v);
    }
    let mut f = vec![
        ("Name", v.name.clone()),
        ("Pool", v.pool.clone()),
        ("Path", v.path.clone()),
        ("Format", v.format.as_str().to_owned()),
        ("Capacity", output::bytes(v.capacity)),
        ("Allocation", output::bytes(v.allocation)),
    ];
    if let Some(b) = &v.backing {
        f.push(("Backing", b.path.clone()));
    }
    output::line(&output::fields(&f))
}
