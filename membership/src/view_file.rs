//! The view a locator persists in its working directory, so that a restarted locator can
//! find the cluster again through the members it last knew, even when no other locator is
//! up.
//!
//! File layout: `COHORT-VIEW` (11 bytes), format version (1 byte, currently 1), then the
//! postcard-encoded [`View`]. Written to a temporary file and renamed over the old one, so a
//! crash mid-write leaves the previous view intact.

use std::io;
use std::path::{Path, PathBuf};

use cohort_transport::View;

const MAGIC: &[u8; 11] = b"COHORT-VIEW";
const FORMAT: u8 = 1;

/// Why a persisted view could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewFileError {
    /// The file could not be read or written.
    #[error("view file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The file is not a cohort view file, or is damaged.
    #[error("view file {path} is not a valid cohort view: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// The view file of the locator listening on `port`, in `dir`.
pub fn path_for(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("locator-{port}.view"))
}

/// Writes `view` to `path`, replacing the previous one atomically.
pub fn write(path: &Path, view: &View) -> Result<(), ViewFileError> {
    let io_error = |source| ViewFileError::Io {
        path: path.to_owned(),
        source,
    };
    let body = postcard::to_allocvec(view).map_err(|e| ViewFileError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + 1 + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.push(FORMAT);
    bytes.extend_from_slice(&body);
    let temporary = path.with_extension("view.tmp");
    std::fs::write(&temporary, &bytes).map_err(io_error)?;
    std::fs::rename(&temporary, path).map_err(io_error)
}

/// Reads the view at `path`; `Ok(None)` if there is no file.
pub fn read(path: &Path) -> Result<Option<View>, ViewFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ViewFileError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let invalid = |reason: String| ViewFileError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| invalid("it does not start with COHORT-VIEW".into()))?;
    match body.split_first() {
        Some((&FORMAT, view)) => postcard::from_bytes(view)
            .map(Some)
            .map_err(|e| invalid(e.to_string())),
        Some((format, _)) => Err(invalid(format!(
            "format {format}, this build reads format {FORMAT}"
        ))),
        None => Err(invalid("it ends after its magic".into())),
    }
}

#[cfg(test)]
mod tests {
    use cohort_transport::{MemberId, MemberKind, ViewId};

    use super::*;

    #[test]
    fn a_view_survives_the_round_trip_and_damage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("cohort-view-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = path_for(&dir, 4000);
        assert!(read(&path).expect("no file is fine").is_none());
        let member = MemberId::new(
            "l1",
            "127.0.0.1:4000".parse().expect("literal"),
            MemberKind::Locator,
        );
        let view = View::new(ViewId(12), [member]);
        write(&path, &view).expect("write");
        assert_eq!(read(&path).expect("read"), Some(view));

        std::fs::write(&path, b"COHORT-VIEW\x07rest").expect("damage");
        let error = read(&path).expect_err("unknown format");
        assert!(error.to_string().contains("format 7"), "{error}");
        std::fs::write(&path, b"hello").expect("damage");
        assert!(read(&path).is_err());
        std::fs::write(&path, b"COHORT-VIEW\x01\xff\xff").expect("damage");
        assert!(read(&path).is_err());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
