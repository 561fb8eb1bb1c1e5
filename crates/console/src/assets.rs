//! Static files compiled into the binary (one stylesheet, no scripts). Served under
//! `/console/assets/` with their content hash as the ETag, so browsers revalidate cheaply.

use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Embedded;

/// An embedded file: its bytes, MIME type and a strong ETag.
pub struct Asset {
    pub bytes: std::borrow::Cow<'static, [u8]>,
    pub mime: &'static str,
    pub etag: String,
}

pub fn get(path: &str) -> Option<Asset> {
    let file = Embedded::get(path)?;
    let mime = match path.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    };
    Some(Asset { etag: format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12])), bytes: file.data, mime })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stylesheet_is_embedded_and_nothing_else_is_found() {
        let css = super::get("console.css");
        assert!(css.as_ref().is_some_and(|a| a.mime.starts_with("text/css") && !a.bytes.is_empty()));
        assert!(super::get("../Cargo.toml").is_none());
        assert!(super::get("missing.css").is_none());
    }
}
