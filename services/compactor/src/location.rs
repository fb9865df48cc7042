//! Where the compactor keeps things: the Delta table, the dead letters and the
//! COPY manifests each live at a [`Location`], a local directory (the embedded
//! default) or an `s3://bucket/prefix` URL. Both are reached through the same
//! `object_store` that delta-rs uses, configured from the standard `AWS_*`
//! environment variables (`AWS_REGION`, credentials from the default chain,
//! `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true` for a local S3 server).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use deltalake::logstore::object_store::buffered::BufWriter;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use deltalake::{DeltaTableBuilder, DeltaTableError};
use tokio::io::AsyncWriteExt as _;
use url::Url;

use crate::CompactorError;

/// The whole object at `path` in `store`.
pub async fn get_bytes(
    store: &dyn ObjectStore,
    path: &deltalake::Path,
) -> Result<Bytes, deltalake::ObjectStoreError> {
    store.get(path).await?.bytes().await
}

/// Writes `body` whole as the object named by `uri` (a local file path,
/// `file://`, or `s3://bucket/key`), replacing any previous one: a local file
/// appears under its name only when complete (object_store writes a staging
/// file and renames it), an S3 object in one PUT. Returns how it is named.
pub async fn put_object(uri: &str, body: Bytes) -> Result<String, CompactorError> {
    let bad = || {
        CompactorError::Config(format!(
            "output {uri:?}: needs a directory (or bucket) and a file name"
        ))
    };
    // The scheme's `//` is no directory separator: split the rest.
    let (scheme, rest) = match uri.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, uri),
    };
    let (dir, name) = rest.rsplit_once('/').ok_or_else(bad)?;
    if name.is_empty() || dir.trim_matches('/').is_empty() {
        return Err(bad());
    }
    let dir = match scheme {
        Some(scheme) => format!("{scheme}://{dir}"),
        None => dir.to_owned(),
    };
    Location::parse(&dir)?.put(name, body).await
}

/// A directory: local, or a prefix in an object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    url: Url,
    local: Option<PathBuf>,
    /// Object store options (`AWS_ENDPOINT_URL`, ...) on top of the
    /// environment; empty in production, where the environment says it all.
    options: HashMap<String, String>,
}

impl Location {
    /// Parses `s3://bucket/prefix` (also `s3a://`, `file://`) or a local path
    /// (relative paths are made absolute against the working directory).
    pub fn parse(text: &str) -> Result<Self, CompactorError> {
        let bad = |why: String| CompactorError::Config(format!("location {text:?}: {why}"));
        if text.trim().is_empty() {
            return Err(bad("is empty".into()));
        }
        if text.contains("://") {
            let mut url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
            return match url.scheme() {
                "file" => {
                    let path = url
                        .to_file_path()
                        .map_err(|()| bad("is not a local file URL".into()))?;
                    Ok(Self::local(&path))
                }
                "s3" | "s3a" => {
                    if url.host_str().unwrap_or("").is_empty() {
                        return Err(bad("names no bucket".into()));
                    }
                    if !url.path().ends_with('/') {
                        let path = format!("{}/", url.path());
                        url.set_path(&path);
                    }
                    Ok(Self {
                        url,
                        local: None,
                        options: HashMap::new(),
                    })
                }
                other => Err(bad(format!(
                    "scheme {other}:// is not supported (use s3:// or a local path)"
                ))),
            };
        }
        Ok(Self::local(Path::new(text)))
    }

    /// A local directory (need not exist yet).
    pub fn local(path: &Path) -> Self {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let mut url = Url::from_directory_path(&abs)
            .unwrap_or_else(|()| Url::parse("file:///").expect("static URL"));
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Self {
            url,
            local: Some(abs),
            options: HashMap::new(),
        }
    }

    /// The same location with these object store options (they win over the
    /// environment), for example `AWS_ENDPOINT_URL` of a test's own server.
    pub fn with_options(mut self, options: HashMap<String, String>) -> Self {
        self.options = options;
        self
    }

    /// The object store options.
    pub fn options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The directory's URL (always ending in `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The local directory, when local.
    pub fn local_path(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    /// The subdirectory `name`.
    pub fn child(&self, name: &str) -> Self {
        match &self.local {
            Some(path) => Self::local(&path.join(name)),
            None => {
                let mut url = self.url.clone();
                let path = format!("{}{}/", url.path(), name.trim_matches('/'));
                url.set_path(&path);
                Self {
                    url,
                    local: None,
                    options: self.options.clone(),
                }
            }
        }
    }

    /// The sibling directory named after this one plus `suffix`
    /// (`s3://b/t/` + `_dead_letter` is `s3://b/t_dead_letter/`).
    pub fn with_suffix(&self, suffix: &str) -> Self {
        match &self.local {
            Some(path) => {
                let mut s = path.as_os_str().to_owned();
                s.push(suffix);
                Self::local(Path::new(&s))
            }
            None => {
                let mut url = self.url.clone();
                let path = format!("{}{suffix}/", url.path().trim_end_matches('/'));
                url.set_path(&path);
                Self {
                    url,
                    local: None,
                    options: self.options.clone(),
                }
            }
        }
    }

    /// How a file in this directory is named to people and to other tools: a
    /// plain path when local, the URL otherwise.
    pub fn display_of(&self, name: &str) -> String {
        match &self.local {
            Some(path) => path.join(name).display().to_string(),
            None => format!("{}{name}", self.url),
        }
    }

    /// Makes sure a local directory exists (object stores need nothing).
    pub fn ensure_exists(&self) -> Result<(), CompactorError> {
        if let Some(path) = &self.local {
            std::fs::create_dir_all(path)
                .map_err(|e| CompactorError::io(format!("create {}", path.display()), e))?;
        }
        Ok(())
    }

    /// An object store rooted at this directory.
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>, CompactorError> {
        self.ensure_exists()?;
        let err = |e: DeltaTableError| CompactorError::delta(self.url.as_str(), "open storage", e);
        let log_store = DeltaTableBuilder::from_url(self.url.clone())
            .map_err(err)?
            .with_storage_options(self.options.clone())
            .build_storage()
            .map_err(err)?;
        Ok(log_store.object_store(None))
    }

    /// Writes `name` in one atomic put (replacing any previous object).
    pub async fn put(&self, name: &str, body: Bytes) -> Result<String, CompactorError> {
        let store = self.store()?;
        store
            .put(&deltalake::Path::from(name), PutPayload::from(body))
            .await
            .map_err(|e| self.store_error("write", name, e))?;
        Ok(self.display_of(name))
    }

    /// Reads `name`, or `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>, CompactorError> {
        let store = self.store()?;
        match get_bytes(store.as_ref(), &deltalake::Path::from(name)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(deltalake::ObjectStoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error("read", name, e)),
        }
    }

    /// Whether `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, CompactorError> {
        let store = self.store()?;
        match store.head(&deltalake::Path::from(name)).await {
            Ok(_) => Ok(true),
            Err(deltalake::ObjectStoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.store_error("check", name, e)),
        }
    }

    /// Deletes `name` if it exists.
    pub async fn delete(&self, name: &str) -> Result<(), CompactorError> {
        if let Some(path) = &self.local
            && !path.join(name).exists()
        {
            return Ok(());
        }
        let store = self.store()?;
        match store.delete(&deltalake::Path::from(name)).await {
            Ok(()) | Err(deltalake::ObjectStoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error("delete", name, e)),
        }
    }

    pub(crate) fn store_error(
        &self,
        what: &str,
        name: &str,
        e: deltalake::ObjectStoreError,
    ) -> CompactorError {
        CompactorError::Storage {
            context: format!("{what} {}", self.display_of(name)),
            source: Box::new(e),
        }
    }
}

/// An object written as a stream (a multipart upload; a temporary file
/// locally) that appears whole under its name only when finished: a crashed
/// attempt leaves nothing under that name.
pub(crate) struct StreamedObject {
    out: BufWriter,
    /// How errors name it.
    display: String,
}

impl StreamedObject {
    pub(crate) fn new(
        store: deltalake::logstore::ObjectStoreRef,
        path: &str,
        display: String,
    ) -> Self {
        Self {
            out: BufWriter::new(store, deltalake::Path::from(path)),
            display,
        }
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), CompactorError> {
        self.out
            .write_all(bytes)
            .await
            .map_err(|e| CompactorError::io(format!("write {}", self.display), e))
    }

    pub(crate) async fn finish(mut self) -> Result<(), CompactorError> {
        self.out
            .shutdown()
            .await
            .map_err(|e| CompactorError::io(format!("finish {}", self.display), e))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.local {
            Some(path) => write!(f, "{}", path.display()),
            None => f.write_str(self.url.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_object_writes_a_whole_file_and_replaces_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("reports/run.json");
        let uri = path.to_str().expect("utf-8 path");
        let named = put_object(uri, Bytes::from_static(b"{\"a\":1}\n"))
            .await
            .expect("put");
        assert_eq!(named, uri);
        put_object(uri, Bytes::from_static(b"{\"a\":2}\n"))
            .await
            .expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"{\"a\":2}\n");
        for bad in [
            "run.json",
            "/",
            "/run.json",
            "s3://bucket",
            "s3://bucket/",
            "s3:///key",
        ] {
            assert!(
                put_object(bad, Bytes::new()).await.is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn parses_local_paths_and_s3_urls() {
        let s3 = Location::parse("s3://lake/tables/positions").expect("s3");
        assert_eq!(s3.url().as_str(), "s3://lake/tables/positions/");
        assert_eq!(s3.local_path(), None);
        assert_eq!(
            s3.with_suffix("_dead_letter").url().as_str(),
            "s3://lake/tables/positions_dead_letter/"
        );
        assert_eq!(
            s3.child("_manifests").url().as_str(),
            "s3://lake/tables/positions/_manifests/"
        );
        assert_eq!(
            s3.child("_manifests").display_of("v1.json"),
            "s3://lake/tables/positions/_manifests/v1.json"
        );
        let local = Location::parse("/tmp/t").expect("local");
        assert_eq!(local.url().as_str(), "file:///tmp/t/");
        assert_eq!(local.with_suffix("_dl").to_string(), "/tmp/t_dl");
        assert_eq!(local.child("m").display_of("a.json"), "/tmp/t/m/a.json");
        assert_eq!(
            Location::parse("file:///tmp/t").expect("file url"),
            Location::local(Path::new("/tmp/t"))
        );
        let relative = Location::parse("rel/t").expect("relative");
        assert!(relative.local_path().expect("local").is_absolute());
        for bad in ["", "gs://b/t", "s3:///t", "http://x/y"] {
            assert!(Location::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
