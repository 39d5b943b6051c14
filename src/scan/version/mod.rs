//! Version orderings, one per packaging world. OSV ranges are evaluated with the ordering of
//! the affected package's ecosystem (`ECOSYSTEM` ranges) or SemVer (`SEMVER` ranges).
//!
//! - [`dpkg`] orders Debian and Ubuntu (`dpkg --compare-versions`).
//! - [`apk`] orders Alpine and Wolfi (`apk version -t`).
//! - [`rpm`] orders RPM distributions (`rpmvercmp` on epoch, version, release).
//! - [`semver`] orders npm, crates.io and Go modules (SemVer 2.0 precedence).
//! - [`pep440`] orders PyPI.
//! - [`maven`] orders Maven (`ComparableVersion`).
//!
//! Every comparison is total and never fails: scanners meet versions that break their
//! scheme's grammar, and an odd version must still be ordered rather than crash a scan.

pub mod apk;
pub mod dpkg;
pub mod maven;
pub mod pep440;
pub mod rpm;
pub mod semver;

use std::cmp::Ordering;

/// A version ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Dpkg,
    Apk,
    Rpm,
    Semver,
    Pep440,
    Maven,
}

impl Scheme {
    /// The ordering of an OSV ecosystem (`Debian:12`, `PyPI`, ...); `None` when unknown.
    pub fn for_ecosystem(ecosystem: &str) -> Option<Scheme> {
        let base = ecosystem.split(':').next().unwrap_or_default();
        Some(match base {
            "Debian" | "Ubuntu" => Scheme::Dpkg,
            "Alpine" | "Wolfi" | "Chainguard" => Scheme::Apk,
            "AlmaLinux" | "Rocky Linux" | "Red Hat" | "openSUSE" | "SUSE" | "Mageia" => Scheme::Rpm,
            "npm" | "crates.io" | "Go" | "Hex" | "Pub" | "NuGet" => Scheme::Semver,
            "PyPI" => Scheme::Pep440,
            "Maven" => Scheme::Maven,
            _ => return None,
        })
    }

    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Scheme::Dpkg => dpkg::compare(a, b),
            Scheme::Apk => apk::compare(a, b),
            Scheme::Rpm => rpm::compare(a, b),
            Scheme::Semver => semver::compare(a, b),
            Scheme::Pep440 => pep440::compare(a, b),
            Scheme::Maven => maven::compare(a, b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scheme;

    #[test]
    fn ecosystems_map_to_orderings() {
        assert_eq!(Scheme::for_ecosystem("Debian:12"), Some(Scheme::Dpkg));
        assert_eq!(
            Scheme::for_ecosystem("Ubuntu:22.04:LTS"),
            Some(Scheme::Dpkg)
        );
        assert_eq!(Scheme::for_ecosystem("Alpine:v3.19"), Some(Scheme::Apk));
        assert_eq!(Scheme::for_ecosystem("Rocky Linux:9"), Some(Scheme::Rpm));
        assert_eq!(Scheme::for_ecosystem("crates.io"), Some(Scheme::Semver));
        assert_eq!(Scheme::for_ecosystem("PyPI"), Some(Scheme::Pep440));
        assert_eq!(Scheme::for_ecosystem("Maven"), Some(Scheme::Maven));
        assert_eq!(Scheme::for_ecosystem("GIT"), None);
    }
}
