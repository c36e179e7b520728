//! The node's settings: defaults for an embedded single node, an optional
//! TOML file, and command-line flags, in increasing order of precedence.
//! Names are Redis's where Redis has the setting (`appendfsync`,
//! `requirepass`, `maxclients`, ...), so that `CONFIG GET` answers what a
//! Redis user asks.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use weir_stream::{Compatibility, FsyncPolicy};

/// Every setting of a node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Where data lives (created if missing).
    pub data_dir: PathBuf,
    /// The RESP listener's address.
    pub resp_addr: String,
    /// Whether streams are persisted to the command log.
    pub appendonly: bool,
    /// When the command log is synced: `always`, `everysec`, `no`.
    pub appendfsync: String,
    /// The password clients must give (AUTH or HELLO ... AUTH); none if
    /// empty.
    pub requirepass: String,
    /// Most clients connected at once; more are refused with an error.
    pub maxclients: usize,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    /// Threads of the runtime: 1 (the default) is one event loop, as in
    /// Redis; 0 is one worker per core.
    pub threads: usize,
    /// Entries per stream node (Redis's `stream-node-max-entries`).
    pub stream_node_max_entries: u64,
    /// Bytes per stream node (Redis's `stream-node-max-bytes`).
    pub stream_node_max_bytes: u64,
    /// Which Redis release to follow where releases differ: `7.4` or `7.0`.
    pub compatibility: String,
    /// Largest bulk string of a request (Redis's `proto-max-bulk-len`).
    pub proto_max_bulk_len: usize,
    /// Unprocessed input a client may hold (Redis's
    /// `client-query-buffer-limit`).
    pub client_query_buffer_limit: usize,
    /// Pub/sub output limit: a subscriber holding more is disconnected.
    pub pubsub_output_hard_limit: usize,
    /// Pub/sub soft output limit ...
    pub pubsub_output_soft_limit: usize,
    /// ... for this many seconds.
    pub pubsub_output_soft_seconds: u64,
    /// Replies queued for a client that does not read them (blocked-read
    /// wake-ups, kept apart from pub/sub messages): past this, the client is
    /// disconnected.
    pub client_output_limit: usize,
    /// Close clients idle for this many seconds (0: never).
    pub timeout: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("weir-data"),
            resp_addr: "127.0.0.1:6379".into(),
            appendonly: true,
            appendfsync: "everysec".into(),
            requirepass: String::new(),
            maxclients: 10_000,
            log_level: "info".into(),
            threads: 1,
            stream_node_max_entries: 100,
            stream_node_max_bytes: 4096,
            compatibility: "7.4".into(),
            proto_max_bulk_len: 512 << 20,
            client_query_buffer_limit: 1 << 30,
            pubsub_output_hard_limit: 32 << 20,
            pubsub_output_soft_limit: 8 << 20,
            pubsub_output_soft_seconds: 60,
            client_output_limit: 256 << 20,
            timeout: 0,
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        message: String,
    },
    /// A value out of its range.
    #[error("invalid value {value:?} for {name}: {expected}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
}

impl Settings {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let settings: Settings = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.fsync_policy()?;
        self.compatibility()?;
        parse_level(&self.log_level)?;
        if self.maxclients == 0 {
            return Err(invalid("maxclients", "0", "at least 1"));
        }
        if self.proto_max_bulk_len < 1024 {
            return Err(invalid(
                "proto-max-bulk-len",
                &self.proto_max_bulk_len.to_string(),
                "at least 1024",
            ));
        }
        if self.client_query_buffer_limit < 1024 * 1024 {
            return Err(invalid(
                "client-query-buffer-limit",
                &self.client_query_buffer_limit.to_string(),
                "at least 1 MiB",
            ));
        }
        Ok(())
    }

    /// The sync policy.
    pub fn fsync_policy(&self) -> Result<FsyncPolicy, ConfigError> {
        parse_fsync(&self.appendfsync)
    }

    /// The compatibility level.
    pub fn compatibility(&self) -> Result<Compatibility, ConfigError> {
        match self.compatibility.as_str() {
            "7.4" => Ok(Compatibility::Redis74),
            "7.0" => Ok(Compatibility::Redis70),
            other => Err(invalid("compatibility", other, "7.4 or 7.0")),
        }
    }
}

fn invalid(name: &'static str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_string(),
        expected,
    }
}

/// `always`, `everysec` or `no`.
pub fn parse_fsync(text: &str) -> Result<FsyncPolicy, ConfigError> {
    match text.to_ascii_lowercase().as_str() {
        "always" => Ok(FsyncPolicy::Always),
        "everysec" => Ok(FsyncPolicy::EverySec),
        "no" => Ok(FsyncPolicy::No),
        _ => Err(invalid("appendfsync", text, "always, everysec or no")),
    }
}

/// The name of a sync policy.
pub fn fsync_name(policy: FsyncPolicy) -> &'static str {
    match policy {
        FsyncPolicy::Always => "always",
        FsyncPolicy::EverySec => "everysec",
        FsyncPolicy::No => "no",
    }
}

/// A log level name.
pub fn parse_level(text: &str) -> Result<tracing::Level, ConfigError> {
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(tracing::Level::ERROR),
        "warn" | "warning" => Ok(tracing::Level::WARN),
        "info" | "notice" => Ok(tracing::Level::INFO),
        "debug" | "verbose" => Ok(tracing::Level::DEBUG),
        "trace" => Ok(tracing::Level::TRACE),
        _ => Err(invalid(
            "log-level",
            text,
            "error, warn, info, debug or trace",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_defaults_and_rejects_unknown_settings() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("weir.toml");
        std::fs::write(
            &path,
            "data-dir = \"/tmp/x\"\nappendfsync = \"always\"\nmaxclients = 7\n",
        )
        .unwrap();
        let settings = Settings::from_file(&path).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(settings.fsync_policy().unwrap(), FsyncPolicy::Always);
        assert_eq!(settings.maxclients, 7);
        assert_eq!(settings.resp_addr, "127.0.0.1:6379");

        std::fs::write(&path, "no-such-setting = 1\n").unwrap();
        let error = Settings::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("no-such-setting"), "{error}");
        std::fs::write(&path, "appendfsync = \"sometimes\"\n").unwrap();
        let error = Settings::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("always, everysec or no"), "{error}");
    }
}
