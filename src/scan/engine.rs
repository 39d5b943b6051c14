//! One scan, start to end, without I/O of its own: layers in (as readers, bottom first),
//! the SBOM, the report and the severity summary out. [`scan_image`] walks the layers;
//! [`rematch`] starts from a stored SBOM instead (after a database update), so no layer is
//! read again.

use std::io::Read;

use super::report::{self, Summary};
use super::sbom::{self, ImageRef};
use super::vulndb::Reader;
use super::walk::{Inventory, Limits, WalkError, WalkStats, Walker};

/// `scannerVersion` of the records (at most 64 characters).
pub const SCANNER_VERSION: &str = concat!("atcr-scanner-v", env!("CARGO_PKG_VERSION"));

/// Scan record status (`io.atcr.hold.scan#status` known values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Failed,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// What a scan produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    /// Why it failed or was skipped; for `ok`, a caveat (no database yet, files skipped).
    pub reason: Option<String>,
    pub summary: Summary,
    pub sbom: Option<Vec<u8>>,
    pub report: Option<Vec<u8>>,
    pub packages: usize,
    pub stats: WalkStats,
}

impl Outcome {
    pub fn skipped(reason: impl Into<String>) -> Outcome {
        Outcome::bare(Status::Skipped, reason.into())
    }

    pub fn failed(reason: impl Into<String>) -> Outcome {
        Outcome::bare(Status::Failed, reason.into())
    }

    fn bare(status: Status, reason: String) -> Outcome {
        Outcome {
            status,
            reason: Some(reason),
            summary: Summary::default(),
            sbom: None,
            report: None,
            packages: 0,
            stats: WalkStats::default(),
        }
    }
}

/// A layer to read, or why it cannot be.
pub type LayerSource<'a> = Result<Box<dyn Read + 'a>, String>;

/// Walks the layers and matches what they hold.
pub fn scan_image<'a>(
    image: &ImageRef,
    layers: impl IntoIterator<Item = LayerSource<'a>>,
    limits: &Limits,
    db: Option<&Reader>,
    now: &str,
) -> Outcome {
    let mut walker = Walker::new(limits.clone());
    for (i, layer) in layers.into_iter().enumerate() {
        let r = match layer {
            Ok(r) => r,
            Err(e) => return Outcome::failed(format!("layer {}: {e}", i + 1)),
        };
        if let Err(e) = walker.add_layer(r) {
            return Outcome::failed(match e {
                WalkError::Limit(m) => m,
                other => other.to_string(),
            });
        }
    }
    let inv = walker.finish();
    let sbom = sbom::build(image, &inv, now, env!("CARGO_PKG_VERSION"));
    finish(
        image,
        &inv,
        serde_json::to_vec(&sbom).unwrap_or_default(),
        db,
        now,
    )
}

/// Matches a stored SBOM again (the database changed).
pub fn rematch(image: &ImageRef, sbom_bytes: Vec<u8>, db: Option<&Reader>, now: &str) -> Outcome {
    match sbom::read(&sbom_bytes) {
        Ok(view) => finish(image, &sbom::to_inventory(&view), sbom_bytes, db, now),
        Err(e) => Outcome::failed(format!("the stored SBOM cannot be read: {e}")),
    }
}

fn finish(
    image: &ImageRef,
    inv: &Inventory,
    sbom: Vec<u8>,
    db: Option<&Reader>,
    now: &str,
) -> Outcome {
    let findings = match db {
        Some(r) => match super::matcher::find(r, inv) {
            Ok(f) => f,
            Err(e) => return Outcome::failed(format!("vulnerability database: {e}")),
        },
        None => Vec::new(),
    };
    let ctx = report::Context {
        digest: &image.digest,
        repository: &image.repository,
        user_did: &image.user_did,
        distro: inv.distro.as_ref(),
        database: db.map(|r| &r.meta),
        created_at: now,
        packages: inv.packages.len(),
        notes: &inv.notes,
    };
    let report = report::build(&ctx, &findings);
    let mut reason = None;
    if db.is_none() {
        reason = Some(
            "no vulnerability database yet: run `atcr vulndb import` or set scan.vulndb_urls"
                .to_string(),
        );
    } else if !inv.notes.is_empty() {
        reason = Some(crate::scan::inventory::clip(
            &format!("{} file(s) not read: {}", inv.notes.len(), inv.notes[0]),
            256,
        ));
    }
    Outcome {
        status: Status::Ok,
        reason,
        summary: report::Summary::of(&findings),
        sbom: Some(sbom),
        report: Some(serde_json::to_vec(&report).unwrap_or_default()),
        packages: inv.packages.len(),
        stats: inv.stats.clone(),
    }
}
