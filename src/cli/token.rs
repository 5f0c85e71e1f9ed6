//! `switchyard token hash`: the SHA-256 of an operator API token, read from stdin, as the
//! `http.auth` entry (`name:role:sha256-hex`) to put in the config or the tokens file. The token
//! itself is never stored.

use std::io::Read;

#[derive(clap::Args)]
pub(crate) struct HashArgs {
    /// The token's name (recorded as `by` with its writes).
    #[arg(long)]
    name: String,
    /// viewer, operator or supervisor.
    #[arg(long, value_parser = ["viewer", "operator", "supervisor"])]
    role: String,
}

pub(crate) fn hash(a: HashArgs) -> anyhow::Result<()> {
    let mut token = String::new();
    std::io::stdin().read_to_string(&mut token)?;
    let token = token.trim();
    if token.len() < 16 {
        anyhow::bail!("the token on stdin has {} characters: use at least 16 random ones (e.g. `openssl rand -hex 24`)", token.len());
    }
    println!("{}:{}:{}", a.name, a.role, switchyard::token_hash(token));
    Ok(())
}
