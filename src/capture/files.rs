//! Image files, or every image in directories, replayed once as frames (replays, diagnosis,
//! tests).

use std::path::{Path, PathBuf};

use super::{FrameStamper, Input, Source, SourceError};

/// Image files, or every image in directories (sorted), once — replays, diagnosis, tests.
#[derive(Debug)]
pub struct FileSource {
    name: String,
    files: std::vec::IntoIter<PathBuf>,
    stamper: FrameStamper,
}

impl FileSource {
    pub fn new(paths: &[PathBuf]) -> Result<FileSource, SourceError> {
        let mut files = Vec::new();
        for p in paths {
            if p.is_dir() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(|e| SourceError::new(&p.display().to_string(), e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| is_image(f))
                    .collect();
                entries.sort();
                files.extend(entries);
            } else {
                files.push(p.clone());
            }
        }
        Ok(FileSource {
            name: format!("files({})", files.len()),
            files: files.into_iter(),
            stamper: FrameStamper::new(),
        })
    }
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg" | "webp" | "bmp" | "pgm")
    )
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn lossless(&self) -> bool {
        true
    }

    fn next(&mut self) -> Result<Option<Input>, SourceError> {
        for path in self.files.by_ref() {
            match super::image::load_gray(&path) {
                Ok(image) => return Ok(Some(self.stamper.frame(image))),
                // One unreadable file does not end a replay.
                Err(e) => tracing::warn!(error = %e, "files: skipping unreadable image"),
            }
        }
        Ok(None)
    }
}
