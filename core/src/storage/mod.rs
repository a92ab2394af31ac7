//! Embedded storage on sled: one data folder, opened once, shared by the stores of each concern.
//!
//! The folder is locked while open, so two daemons can never write the same data.

use std::path::{Path, PathBuf};

/// Schema version written on first open; a newer one on disk refuses to start.
pub const SCHEMA_VERSION: u32 = 1;
const META_TREE: &str = "meta";
const SCHEMA_KEY: &[u8] = b"schema_version";

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// sled failed (I/O, lock held by another process, corruption).
    #[error("storage at `{path}`: {message}")]
    Open {
        /// The data folder.
        path: PathBuf,
        /// sled's message.
        message: String,
    },
    /// The folder was written by a newer Switchyard.
    #[error(
        "storage at `{path}` has schema version {found}, newer than this build's {SCHEMA_VERSION}"
    )]
    TooNew {
        /// The data folder.
        path: PathBuf,
        /// Version found.
        found: u32,
    },
}

/// The open embedded store.
#[derive(Clone)]
pub struct Storage {
    db: sled::Db,
    path: PathBuf,
}

impl Storage {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::Open {
            path: dir.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| err(&e))?;
        let meta = db.open_tree(META_TREE).map_err(|e| err(&e))?;
        match meta.get(SCHEMA_KEY).map_err(|e| err(&e))? {
            Some(v) => {
                let found = v
                    .as_ref()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| err(&"unreadable schema version"))?;
                if found > SCHEMA_VERSION {
                    return Err(StorageError::TooNew {
                        path: dir.to_path_buf(),
                        found,
                    });
                }
            }
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(|e| err(&e))?;
                db.flush().map_err(|e| err(&e))?;
            }
        }
        Ok(Self {
            db,
            path: dir.to_path_buf(),
        })
    }

    /// The data folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the store answers reads.
    pub fn is_healthy(&self) -> bool {
        self.db
            .open_tree(META_TREE)
            .and_then(|t| t.get(SCHEMA_KEY))
            .is_ok()
    }

    /// The underlying database, for the stores built on it.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}
