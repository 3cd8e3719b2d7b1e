//! `voltool secret add|ls|rm`.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use voltool_api::{AddSecret, SecretAdded, SecretInfo};

use crate::cli::SecretCommand;
use crate::client::Api;
use crate::human::time;
use crate::output;
use crate::table::{self, left};

/// Drops one trailing newline (`echo pass | voltool secret add x`).
fn trim_newline(mut v: Vec<u8>) -> Vec<u8> {
    if v.ends_with(b"\n") {
        v.pop();
        if v.ends_with(b"\r") {
            v.pop();
        }
    }
    v
}

pub async fn run(api: &Api, cmd: SecretCommand) -> Result<ExitCode> {
    match cmd {
        SecretCommand::Add { name, servers } => {
            if std::io::stdin().is_terminal() {
                eprintln!("type the secret for {name}, then press Enter and Ctrl-D:");
            }
            let mut raw = Vec::new();
            std::io::stdin().take(64 * 1024 + 2).read_to_end(&mut raw).context("read the secret from stdin")?;
            let value = String::from_utf8(trim_newline(raw))
                .map_err(|_| anyhow::anyhow!("secret {name} must be UTF-8 text"))?;
            if value.is_empty() {
                bail!(
                    "secret {name} is empty: pipe the value on stdin, e.g. printf %s \"$PASS\" | voltool secret add {name}"
                );
            }
            let servers = (!servers.is_empty()).then_some(servers);
            let r: SecretAdded = api.post("/v1/secrets", AddSecret { name: name.clone(), value, servers }).await?;
            println!("{name}{}", if r.replaced { " (replaced)" } else { "" });
        }
        SecretCommand::Ls { json } => {
            let list: Vec<SecretInfo> = api.get("/v1/secrets").await?;
            if json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .into_iter()
                    .map(|s| {
                        let servers = if s.servers.is_empty() { "(first use)".into() } else { s.servers.join(",") };
                        vec![s.name, servers, time(&s.updated_at)]
                    })
                    .collect();
                table::print(&[left("NAME"), left("SERVERS"), left("UPDATED (UTC)")], &rows)?;
                eprintln!("{} secret{} (values are never shown)", rows.len(), if rows.len() == 1 { "" } else { "s" });
            }
        }
        SecretCommand::Rm { names } => {
            return Ok(api.delete_each(&names, |n| format!("/v1/secrets/{}", crate::client::segment(n))).await);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(super::trim_newline(b"pw\n".to_vec()), b"pw");
        assert_eq!(super::trim_newline(b"pw\r\n".to_vec()), b"pw");
        assert_eq!(super::trim_newline(b"pw\n\n".to_vec()), b"pw\n");
        assert_eq!(super::trim_newline(b"pw".to_vec()), b"pw");
    }
}
