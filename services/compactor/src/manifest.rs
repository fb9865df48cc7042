//! Stage seven, manifest: the Redshift COPY manifest of the files each run
//! added, written after its commit (and rewritten by the next run or by
//! `compactor runs` when a crash lost it).

use deltalake::DeltaTable;

use crate::CompactorError;
use crate::location::Location;
use crate::state::{AddedFile, TableState};

/// Where the COPY manifests go, under the table root.
pub const MANIFEST_DIR: &str = "_manifests";

/// The file name of the COPY manifest of a table version.
pub fn manifest_name(version: u64) -> String {
    format!("v{version:020}.json")
}

/// Writes the Redshift COPY manifest listing exactly `files` to
/// `manifests/v<version>.json` (one atomic put) and returns where it is.
pub async fn write_manifest(
    table: &DeltaTable,
    manifests: &Location,
    version: u64,
    files: &[AddedFile],
) -> Result<String, CompactorError> {
    let root = table.table_url();
    let mut entries = Vec::with_capacity(files.len());
    for file in files {
        // The log's paths are URL-encoded and relative to the table root: the
        // join is the file's absolute URI (file:// locally, s3:// on S3).
        let url = root
            .join(&file.path)
            .map_err(|e| CompactorError::State(format!("bad file path {}: {e}", file.path)))?;
        entries.push(serde_json::json!({
            "url": url.as_str(),
            "mandatory": true,
            "meta": {"content_length": file.size},
        }));
    }
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "entries": entries }))
        .map_err(|e| CompactorError::State(format!("serialize the manifest: {e}")))?;
    manifests
        .put(&manifest_name(version), bytes::Bytes::from(body))
        .await
}

/// `<table>/_manifests` (a hidden directory of the table: Delta readers and
/// `vacuum` leave directories starting with `_` alone).
pub fn default_manifests(table: &Location) -> Location {
    table.child(MANIFEST_DIR)
}

/// Writes the manifest of the newest compactor commit of `state` when a
/// crash right after that commit lost it.
pub async fn recover_last(
    table: &DeltaTable,
    manifests: &Location,
    state: &TableState,
) -> Result<(), CompactorError> {
    if let Some(last) = state.commits.first()
        && !last.adds.is_empty()
        && !manifests.exists(&manifest_name(last.version)).await?
    {
        tracing::info!(
            version = last.version,
            "writing the manifest a previous run did not finish"
        );
        write_manifest(table, manifests, last.version, &last.adds).await?;
    }
    Ok(())
}
