//! A SQLite file of a test's own.

use std::path::{Path, PathBuf};

/// A path for a SQLite database in the temporary directory, unique to one test run; the file
/// and its `-wal` and `-shm` companions are removed when this is dropped.
#[derive(Debug)]
pub struct SqliteFile(PathBuf);

impl SqliteFile {
    /// A fresh path for the test `test_name` (the file is not created).
    pub fn new(test_name: &str) -> Self {
        let name = crate::unique_prefix(test_name).replace(':', "_");
        SqliteFile(std::env::temp_dir().join(format!("{name}.db")))
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A `sqlite://` URL of the path.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
