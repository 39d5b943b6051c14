//! Scanning an OCI image layout directory (`oci:<dir>[:<tag>]`, as skopeo and buildah
//! write them) without a registry: `atcr scan oci:./img:v1` prints the result and writes
//! no record.

use std::path::{Path, PathBuf};

use super::engine::{self, Outcome};
use super::sbom::ImageRef;
use super::vulndb::Reader;
use super::walk::Limits;
use crate::oci::types::manifest::{parse_manifest, ManifestKind};
use crate::oci::types::Digest;

fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm().as_str()).join(d.hex())
}

fn read_small(p: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut v = Vec::new();
    f.take(4 << 20)
        .read_to_end(&mut v)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(v)
}

/// Finds the manifest for `tag` (or the only one) and, in an index, the `platform`
/// (`os/arch`) one, then scans it.
pub fn scan_layout(
    dir: &Path,
    tag: Option<&str>,
    platform: &str,
    limits: &Limits,
    db: Option<&Reader>,
) -> Result<(ImageRef, Outcome), String> {
    let index: serde_json::Value = serde_json::from_slice(&read_small(&dir.join("index.json"))?)
        .map_err(|e| format!("index.json: {e}"))?;
    let empty = Vec::new();
    let manifests = index["manifests"].as_array().unwrap_or(&empty);
    let pick = manifests
        .iter()
        .find(|m| match tag {
            Some(t) => m["annotations"]["org.opencontainers.image.ref.name"] == t,
            None => true,
        })
        .ok_or_else(|| {
            format!(
                "no manifest{} in {}",
                tag.map(|t| format!(" tagged {t}")).unwrap_or_default(),
                dir.display()
            )
        })?;
    let mut desc = pick.clone();
    for _ in 0..4 {
        let digest: Digest = desc["digest"]
            .as_str()
            .unwrap_or("")
            .parse()
            .map_err(|e| format!("digest: {e}"))?;
        let mt = desc["mediaType"].as_str().unwrap_or("");
        let bytes = read_small(&blob_path(dir, &digest))?;
        let parsed = parse_manifest(mt, &bytes).map_err(|e| e.to_string())?;
        if parsed.kind == ManifestKind::Index {
            let (os, arch) = platform.split_once('/').unwrap_or(("linux", platform));
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            desc = v["manifests"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .find(|m| m["platform"]["os"] == os && m["platform"]["architecture"] == arch)
                .cloned()
                .ok_or_else(|| format!("the index has no {platform} manifest"))?;
            continue;
        }
        let image = ImageRef {
            repository: tag
                .map(|t| format!("{}:{t}", dir.display()))
                .unwrap_or_else(|| dir.display().to_string()),
            digest: digest.to_string(),
            user_did: String::new(),
            host: "localhost".into(),
        };
        let layers = parsed
            .layers
            .iter()
            .map(|l| -> engine::LayerSource<'static> {
                let p = blob_path(dir, &l.digest);
                std::fs::File::open(&p)
                    .map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn std::io::Read>)
                    .map_err(|e| format!("{}: {e}", p.display()))
            });
        let out = engine::scan_image(&image, layers, limits, db, &crate::pds::now_rfc3339());
        return Ok((image, out));
    }
    Err("nested indexes are not followed".into())
}
