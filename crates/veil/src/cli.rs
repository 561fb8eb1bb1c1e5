//! Command-line declarations only (no logic): what `veil --help` shows.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "veil", version, about = "Veil: a privacy-first AI API relay")]
pub struct Cli {
    /// Configuration file (TOML). Every value can be overridden by VEIL_… variables.
    #[arg(long, global = true, env = "VEIL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay.
    Serve,
    /// Validate the configuration without starting.
    CheckConfig,
    /// Apply database migrations and the config file's declarations, then exit.
    Migrate,
    /// Operate on the store directly (no running server needed).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Upstream channels.
    Channel {
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Redemption codes: credit users spend with `POST /api/redeem`.
    Code {
        #[command(subcommand)]
        command: CodeCommand,
    },
    /// Run the retention and media purges now: call records older than the cutoff become
    /// daily aggregates without identifiers, and expired generated media is deleted.
    Purge {
        /// Cutoff as an RFC 3339 time (default: now minus privacy.log_retention_days).
        #[arg(long)]
        before: Option<String>,
    },
    /// Print everything Veil holds about a user (JSON).
    ExportUser { name: String },
    /// Erase a user: keys and account deleted, call records kept only as anonymous aggregates.
    EraseUser { name: String },
    /// The hash-chained audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Rotate the master key without downtime: add copies of every installation secret
    /// wrapped by a new key and install it (master.key, or print it for VEIL_MASTER_KEY);
    /// once every instance runs with the new key, `--finish` deletes the old key's copies.
    RotateMasterKey {
        /// Delete the copies wrapped by any other master key than the current one.
        #[arg(long)]
        finish: bool,
    },
    /// Call records (metadata only), newest first.
    Logs {
        /// Only this user's calls.
        #[arg(long)]
        user: Option<String>,
        /// Only calls made with this key (its id, as `key list` shows it).
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the chain: a modified or deleted entry is reported by its sequence number.
    Verify,
    /// Recent entries, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account.
    Add {
        name: String,
        #[arg(long)]
        email: Option<String>,
        /// Read a console password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, default_value = "default")]
        group: String,
        /// user, admin or root.
        #[arg(long, default_value = "user")]
        role: String,
        /// Initial credit, in currency units (e.g. 10 or 1.5).
        #[arg(long, value_name = "AMOUNT", allow_hyphen_values = true)]
        credit: Option<String>,
    },
    /// List accounts with their balances.
    List,
    /// Add (or, with a negative amount, remove) credit.
    Credit {
        name: String,
        #[arg(allow_hyphen_values = true)]
        amount: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; its secret is printed once and never stored.
    Create(Box<KeyCreate>),
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a key by id; running servers refuse it within seconds.
    Revoke { id: String },
    /// Suspend a key by id (as risk control does): its calls get `403 key_suspended`
    /// until it is unsuspended; its owner can still read why.
    Suspend { id: String },
    /// Lift a key's suspension; running servers accept it again within seconds.
    Unsuspend { id: String },
}

#[derive(Debug, Args)]
pub struct KeyCreate {
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub name: Option<String>,
    /// Models this key may use, comma-separated (default: all of its group's).
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Lifetime such as 30d or 12h, or an RFC 3339 time.
    #[arg(long)]
    pub expires: Option<String>,
    /// Spending cap, in currency units.
    #[arg(long, value_name = "AMOUNT")]
    pub quota: Option<String>,
    /// Most the key may spend per UTC day, in currency units.
    #[arg(long, value_name = "AMOUNT")]
    pub daily_spend: Option<String>,
    /// Most the key may spend per calendar month, in currency units.
    #[arg(long, value_name = "AMOUNT")]
    pub monthly_spend: Option<String>,
    #[arg(long)]
    pub rpm: Option<u32>,
    #[arg(long)]
    pub tpm: Option<u32>,
    #[arg(long)]
    pub max_concurrent: Option<u32>,
    /// Client networks allowed to use the key, comma-separated CIDRs.
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub ip_allow: Option<Vec<String>>,
    /// Consent to channels that may train on the data (recorded).
    #[arg(long)]
    pub allow_training: bool,
    /// Narrow the group's privacy requirement for this key: shorter retention only…
    #[arg(long, value_name = "DAYS")]
    pub max_retention_days: Option<u32>,
    /// …only these regions (comma-separated)…
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub regions: Option<Vec<String>>,
    /// …a stricter firewall: identity or pii.
    #[arg(long, value_name = "MODE")]
    pub firewall: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// List channels with their data policies and health (as the servers last saved it).
    List,
    /// Make one real call through a channel and report its latency or error.
    Test { name: String },
    /// Lift a channel's disabling (a rejected credential's or an admin's).
    Enable { name: String },
    /// Take a channel out of routing on every server until it is enabled again.
    Disable { name: String },
}

#[derive(Debug, Subcommand)]
pub enum CodeCommand {
    /// Create codes worth AMOUNT each; they are printed once (one per line) and never stored.
    Create {
        /// Credit per code, in currency units (e.g. 5 or 1.5).
        amount: String,
        /// How many codes (1 to 10000).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Lifetime such as 30d or 12h, or an RFC 3339 time (default: never expires).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List codes, newest first (display prefixes only, never the codes).
    List {
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}
