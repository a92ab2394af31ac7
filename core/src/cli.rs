//! The `switchyard` command line: `serve`, `check-config`, `hash-key`.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{hash_key, Config, ConfigError, Overrides};

/// Switchyard: one local API in front of cache, local models and cloud LLMs.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// Config file (TOML). Without one, an embedded default serves on 127.0.0.1:8080.
        #[arg(long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, e.g. 0.0.0.0:8080 (wins over config and environment).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data folder for the embedded store.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate a config file and print what it configures.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the `sha256:` hash of an API key read from standard input, for `[[auth.keys]]`.
    HashKey {
        /// Generate a new random key and print it with its hash instead of reading one.
        #[arg(long)]
        generate: bool,
    },
}

/// Load config for `serve`.
pub fn serve_config(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
) -> Result<Config, ConfigError> {
    Config::load(config.as_deref(), &Overrides { listen, data_dir })
}

/// `check-config`: validate and describe.
pub fn check_config(file: &std::path::Path, out: &mut impl Write) -> Result<(), ConfigError> {
    let c = Config::load(Some(file), &Overrides::default())?;
    let w = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    w(out, format!("{}: ok", file.display()));
    w(out, format!("  listen: {}", c.server.listen));
    w(out, format!("  data_dir: {}", c.server.data_dir.display()));
    w(
        out,
        format!(
            "  keys: {} (unauthenticated loopback: {})",
            c.auth.keys.len(),
            c.auth.allow_unauthenticated_loopback
        ),
    );
    for p in c.providers.values() {
        w(
            out,
            format!("  provider {}: {:?} at {}", p.name, p.kind, p.base_url),
        );
    }
    for (name, targets) in &c.models {
        let chain: Vec<String> = targets
            .iter()
            .map(|t| format!("{}/{}", t.provider, t.model))
            .collect();
        w(out, format!("  model {name}: {}", chain.join(" -> ")));
    }
    Ok(())
}

/// `hash-key`: hash a key from `input`, or generate one.
pub fn hash_key_command(
    generate: bool,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if generate {
        use rand::RngCore;
        let mut raw = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut raw);
        let key = format!("sy-{}", hex::encode(raw));
        writeln!(out, "key:  {key}")?;
        writeln!(out, "hash: {}", hash_key(&key))?;
        return Ok(());
    }
    let mut line = String::new();
    input.read_line(&mut line)?;
    let key = line.trim();
    if key.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no key on standard input",
        ));
    }
    writeln!(out, "{}", hash_key(key))
}
