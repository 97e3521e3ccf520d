//! Images uploaded from the chat: saved under `<workspace>/.lmms-serve/uploads/` with a
//! unique, sanitized name, and referred to by that workspace path afterwards.

use super::error::{ApiError, ApiResult};
use super::workspace::Workspace;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where uploads go, relative to the workspace.
pub const UPLOAD_DIR: &str = ".lmms-serve/uploads";
/// Largest upload accepted.
pub const MAX_UPLOAD_BYTES: usize = 32 << 20;
const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"];

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `name` reduced to letters, digits, `-`, `_` and one extension, at most 60 characters.
pub fn sanitize(name: &str) -> ApiResult<(String, String)> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let (stem, ext) = base.rsplit_once('.').unwrap_or((base, ""));
    let ext = ext.to_ascii_lowercase();
    if !EXTENSIONS.contains(&ext.as_str()) {
        return Err(ApiError::bad_request(format!(
            "`{name}`: only images can be uploaded ({})",
            EXTENSIONS.join(", ")
        )));
    }
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let stem = if stem.is_empty() {
        "image".into()
    } else {
        stem
    };
    Ok((stem, ext))
}

/// Writes an upload and returns its path relative to the workspace.
pub fn save(ws: &Workspace, name: &str, bytes: &[u8]) -> ApiResult<String> {
    let (stem, ext) = sanitize(name)?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(format!("`{name}` is empty")));
    }
    let dir = ws.writable("upload dir", UPLOAD_DIR)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dir.display())))?;
    // Checked again now that it exists: a symlinked `.lmms-serve` must not lead out.
    let dir = ws.existing("upload dir", UPLOAD_DIR, super::workspace::Kind::Dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let file: PathBuf = dir.join(format!("{stamp}-{n}-{stem}.{ext}"));
    lmms_core::fs::write_atomic(&file, bytes).map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(ws.relative(&file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_and_only_images_accepted() {
        assert_eq!(
            sanitize("../../a b.PNG").unwrap(),
            ("a_b".to_string(), "png".to_string())
        );
        assert_eq!(sanitize("C:\\x\\cat.jpeg").unwrap().0, "cat");
        assert!(sanitize("run.sh").is_err());
        assert!(sanitize("noext").is_err());
        assert_eq!(sanitize(".png").unwrap().0, "image");
    }

    #[test]
    fn uploads_land_in_the_workspace() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::new(d.path()).unwrap();
        let rel = save(&ws, "cat.png", b"\x89PNG").unwrap();
        assert!(rel.starts_with(".lmms-serve/uploads/"), "{rel}");
        assert!(rel.ends_with("-cat.png"), "{rel}");
        assert_eq!(std::fs::read(d.path().join(&rel)).unwrap(), b"\x89PNG");
        assert!(save(&ws, "cat.png", b"").is_err());
    }
}
